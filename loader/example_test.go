package loader_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"

	"github.com/fhirload/fhirload/fhirstore"
	"github.com/fhirload/fhirload/loader"
)

// A Writer sends resources as PUTs in batch Bundles and reports one Outcome
// per item: loaded (created or updated), or why not. Here it writes to the
// local FHIR store, twice: the second time nothing is created.
func ExampleWriter() {
	dir, _ := os.MkdirTemp("", "loader-example-")
	defer os.RemoveAll(dir)
	srv, err := fhirstore.Open(context.Background(), fhirstore.Options{Dir: dir, Auth: "none"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()

	w, err := loader.New(loader.Options{BaseURL: hs.URL + "/datastore/local/r4/", Auth: loader.AuthNone, Mode: loader.ModeBatch})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close()
	items := []loader.Item{
		{Type: "Patient", ID: "p1", Body: []byte(`{"resourceType":"Patient","id":"p1","name":[{"family":"Doe","given":["Jo"]}]}`)},
		{Type: "Patient", ID: "p2", Body: []byte(`{"resourceType":"Patient","id":"p2","gender":"robot"}`)},
	}
	for range 2 {
		outs, err := w.Write(context.Background(), items)
		if err != nil {
			fmt.Println(err)
			return
		}
		for i, o := range outs {
			fmt.Printf("%s/%s loaded=%v created=%v reason=%q status=%d\n", items[i].Type, items[i].ID, o.Loaded, o.Created, o.Reason, o.HTTPStatus)
		}
	}
	// Output:
	// Patient/p1 loaded=true created=true reason="" status=201
	// Patient/p2 loaded=false created=false reason="rejected" status=400
	// Patient/p1 loaded=true created=false reason="" status=200
	// Patient/p2 loaded=false created=false reason="rejected" status=400
}
