package fhirstore

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/healthlake"
	hltypes "github.com/aws/aws-sdk-go-v2/service/healthlake/types"
	"github.com/aws/smithy-go"
)

// hlClient is the AWS SDK's HealthLake client pointed at a server.
func hlClient(addr string, key Key) *healthlake.Client {
	return healthlake.New(healthlake.Options{
		Region:       testRegion,
		BaseEndpoint: aws.String("http://" + addr),
		Credentials:  credentials.NewStaticCredentialsProvider(key.AccessKeyID, key.SecretAccessKey, ""),
		HTTPClient:   &http.Client{Timeout: 30 * time.Second},
	})
}

var fullKey = Key{AccessKeyID: testKeyID, SecretAccessKey: testSecret, Scopes: []string{"system/*.*"}}

// apiErrorCode returns the AWS error code of err ("" if none).
func apiErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// dataPlane sends a signed request to a data store of ls.
func (ls *liveServer) dataPlane(t *testing.T, method, datastore, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+ls.addr+"/datastore/"+datastore+"/r4/"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", contentTypeFHIR)
	}
	signRequest(req, []byte(body), testKeyID, testSecret, testRegion, "", time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitDatastore polls until data store id has status want.
func waitDatastore(t *testing.T, hl *healthlake.Client, id string, want hltypes.DatastoreStatus) *hltypes.DatastoreProperties {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := hl.DescribeFHIRDatastore(context.Background(), &healthlake.DescribeFHIRDatastoreInput{DatastoreId: aws.String(id)})
		if err != nil {
			t.Fatalf("describe %s: %v", id, err)
		}
		if out.DatastoreProperties.DatastoreStatus == want {
			return out.DatastoreProperties
		}
		if time.Now().After(deadline) {
			t.Fatalf("data store %s is %s, want %s", id, out.DatastoreProperties.DatastoreStatus, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestControlPlaneDatastores: the AWS SDK lists the default data store as
// ACTIVE with its endpoint, creates one (CREATING, then ACTIVE, served under
// its own base URL with its own database), and deletes it (DELETING, then
// DELETED; its data plane is then 404 and its folder gone). ClientToken
// makes a create idempotent, and a restart keeps every data store.
func TestControlPlaneDatastores(t *testing.T) {
	dir := t.TempDir()
	ls := startLive(t, Options{Dir: dir})
	hl := hlClient(ls.addr, fullKey)
	ctx := context.Background()

	list, err := hl.ListFHIRDatastores(ctx, &healthlake.ListFHIRDatastoresInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.DatastorePropertiesList) != 1 {
		t.Fatalf("%d data stores listed, want the default one", len(list.DatastorePropertiesList))
	}
	def := list.DatastorePropertiesList[0]
	if aws.ToString(def.DatastoreId) != "local" || def.DatastoreStatus != hltypes.DatastoreStatusActive ||
		aws.ToString(def.DatastoreEndpoint) != "http://"+ls.addr+"/datastore/local/r4/" || def.DatastoreTypeVersion != hltypes.FHIRVersionR4 ||
		!strings.HasPrefix(aws.ToString(def.DatastoreArn), "arn:aws:healthlake:us-east-1:") || def.CreatedAt == nil {
		t.Errorf("default data store: %+v", def)
	}

	created, err := hl.CreateFHIRDatastore(ctx, &healthlake.CreateFHIRDatastoreInput{
		DatastoreName: aws.String("nightly"), DatastoreTypeVersion: hltypes.FHIRVersionR4, ClientToken: aws.String("token-1")})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(created.DatastoreId)
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Errorf("data store id %q: want 32 hex characters, as HealthLake's", id)
	}
	if aws.ToString(created.DatastoreEndpoint) != "http://"+ls.addr+"/datastore/"+id+"/r4/" {
		t.Errorf("endpoint %s", aws.ToString(created.DatastoreEndpoint))
	}
	again, err := hl.CreateFHIRDatastore(ctx, &healthlake.CreateFHIRDatastoreInput{
		DatastoreName: aws.String("nightly"), DatastoreTypeVersion: hltypes.FHIRVersionR4, ClientToken: aws.String("token-1")})
	if err != nil || aws.ToString(again.DatastoreId) != id {
		t.Errorf("create with the same client token: %v, id %s, want %s", err, aws.ToString(again.DatastoreId), id)
	}
	props := waitDatastore(t, hl, id, hltypes.DatastoreStatusActive)
	if aws.ToString(props.DatastoreName) != "nightly" {
		t.Errorf("name %q", aws.ToString(props.DatastoreName))
	}

	// The new data store serves its own data, apart from the default one.
	if st, b := ls.dataPlane(t, "PUT", id, "Patient/p1", patientJSON); st != http.StatusCreated {
		t.Fatalf("PUT into the new data store: %d %s", st, b)
	}
	if st, _ := ls.dataPlane(t, "GET", "local", "Patient/p1", ""); st != http.StatusNotFound {
		t.Errorf("the default data store sees the new one's resource: %d", st)
	}
	if _, err := os.Stat(filepath.Join(dir, "datastores", id, "fhirstore.db")); err != nil {
		t.Errorf("the new data store's database: %v", err)
	}

	// A restart keeps it.
	ls.stop(t)
	ls = startLive(t, Options{Dir: dir})
	hl = hlClient(ls.addr, fullKey)
	if st, b := ls.dataPlane(t, "GET", id, "Patient/p1", ""); st != http.StatusOK {
		t.Fatalf("after a restart: GET from the created data store: %d %s", st, b)
	}

	del, err := hl.DeleteFHIRDatastore(ctx, &healthlake.DeleteFHIRDatastoreInput{DatastoreId: aws.String(id)})
	if err != nil || del.DatastoreStatus != hltypes.DatastoreStatusDeleting {
		t.Fatalf("delete: %v %+v", err, del)
	}
	waitDatastore(t, hl, id, hltypes.DatastoreStatusDeleted)
	if st, b := ls.dataPlane(t, "GET", id, "Patient/p1", ""); st != http.StatusNotFound || !strings.Contains(b, "OperationOutcome") {
		t.Errorf("data plane of a deleted data store: %d %s, want a 404 OperationOutcome", st, b)
	}
	if _, err := os.Stat(filepath.Join(dir, "datastores", id)); !os.IsNotExist(err) {
		t.Errorf("the deleted data store's folder is still there: %v", err)
	}
	list, err = hl.ListFHIRDatastores(ctx, &healthlake.ListFHIRDatastoresInput{
		Filter: &hltypes.DatastoreFilter{DatastoreStatus: hltypes.DatastoreStatusDeleted}})
	if err != nil || len(list.DatastorePropertiesList) != 1 || aws.ToString(list.DatastorePropertiesList[0].DatastoreId) != id {
		t.Errorf("list DELETED: %v %+v", err, list)
	}
	if _, err := hl.DeleteFHIRDatastore(ctx, &healthlake.DeleteFHIRDatastoreInput{DatastoreId: aws.String(id)}); apiErrorCode(err) != "ConflictException" {
		t.Errorf("deleting a DELETED data store: %v, want ConflictException", err)
	}
}

// TestControlPlaneErrors: the error types and validation of the real
// service, as the SDK sees them.
func TestControlPlaneErrors(t *testing.T) {
	ls := startLive(t, Options{Keys: []Key{fullKey, obsKey}})
	hl := hlClient(ls.addr, fullKey)
	ctx := context.Background()
	okImport := func() *healthlake.StartFHIRImportJobInput {
		return &healthlake.StartFHIRImportJobInput{
			DatastoreId:     aws.String("local"),
			InputDataConfig: &hltypes.InputDataConfigMemberS3Uri{Value: "s3://in-bucket/prefix/"},
			JobOutputDataConfig: &hltypes.OutputDataConfigMemberS3Configuration{Value: hltypes.S3Configuration{
				S3Uri: aws.String("s3://out-bucket/results/"), KmsKeyId: aws.String("alias/aws/s3")}},
			DataAccessRoleArn: aws.String("arn:aws:iam::123456789012:role/HealthLakeImport"),
		}
	}
	for _, c := range []struct {
		name string
		call func() error
		code string
		text string
	}{
		{"describe unknown data store", func() error {
			_, err := hl.DescribeFHIRDatastore(ctx, &healthlake.DescribeFHIRDatastoreInput{DatastoreId: aws.String("0123456789abcdef0123456789abcdef")})
			return err
		}, "ResourceNotFoundException", "does not exist"},
		{"create R5", func() error {
			_, err := hl.CreateFHIRDatastore(ctx, &healthlake.CreateFHIRDatastoreInput{DatastoreTypeVersion: "R5"})
			return err
		}, "ValidationException", "enum value set: [R4]"},
		{"create with preload", func() error {
			_, err := hl.CreateFHIRDatastore(ctx, &healthlake.CreateFHIRDatastoreInput{DatastoreTypeVersion: hltypes.FHIRVersionR4,
				PreloadDataConfig: &hltypes.PreloadDataConfig{PreloadDataType: hltypes.PreloadDataTypeSynthea}})
			return err
		}, "ValidationException", "PreloadDataConfig"},
		{"delete the default data store", func() error {
			_, err := hl.DeleteFHIRDatastore(ctx, &healthlake.DeleteFHIRDatastoreInput{DatastoreId: aws.String("local")})
			return err
		}, "ValidationException", "cannot be deleted"},
		{"list with MaxResults 501", func() error {
			_, err := hl.ListFHIRDatastores(ctx, &healthlake.ListFHIRDatastoresInput{MaxResults: aws.Int32(501)})
			return err
		}, "ValidationException", "between 1 and 500"},
		{"import from a bad S3 URI", func() error {
			in := okImport()
			in.InputDataConfig = &hltypes.InputDataConfigMemberS3Uri{Value: "https://in-bucket/prefix/"}
			_, err := hl.StartFHIRImportJob(ctx, in)
			return err
		}, "ValidationException", "inputDataConfig.s3Uri"},
		{"import with a bad role", func() error {
			in := okImport()
			in.DataAccessRoleArn = aws.String("arn:aws:iam::123:user/someone")
			_, err := hl.StartFHIRImportJob(ctx, in)
			return err
		}, "ValidationException", "dataAccessRoleArn"},
		{"import into an unknown data store", func() error {
			in := okImport()
			in.DatastoreId = aws.String("0123456789abcdef0123456789abcdef")
			_, err := hl.StartFHIRImportJob(ctx, in)
			return err
		}, "ResourceNotFoundException", "does not exist"},
		{"describe an unknown job", func() error {
			_, err := hl.DescribeFHIRImportJob(ctx, &healthlake.DescribeFHIRImportJobInput{DatastoreId: aws.String("local"), JobId: aws.String("0123456789abcdef0123456789abcdef")})
			return err
		}, "ResourceNotFoundException", "does not exist"},
		{"a key without system/*.*", func() error {
			_, err := hlClient(ls.addr, obsKey).ListFHIRDatastores(ctx, &healthlake.ListFHIRDatastoresInput{})
			return err
		}, "AccessDeniedException", "system/*.*"},
		{"a wrong secret", func() error {
			_, err := hlClient(ls.addr, Key{AccessKeyID: testKeyID, SecretAccessKey: "wrong"}).ListFHIRDatastores(ctx, &healthlake.ListFHIRDatastoresInput{})
			return err
		}, "UnauthorizedException", "signature"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			if apiErrorCode(err) != c.code || err == nil || !strings.Contains(err.Error(), c.text) {
				t.Errorf("got %v; want %s mentioning %q", err, c.code, c.text)
			}
		})
	}
}
