package fhirstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Data store statuses (the API's DatastoreStatus values).
const (
	dsCreating     = "CREATING"
	dsActive       = "ACTIVE"
	dsDeleting     = "DELETING"
	dsDeleted      = "DELETED"
	dsCreateFailed = "CREATE_FAILED"
)

// datastoresDir holds the created data stores, each in a folder named by
// its id with its own fhirstore.db.
const datastoresDir = "datastores"

// datastore is one FHIR data store: the default one (Options.DatastoreID,
// its database in Dir itself) or one created through the control plane.
type datastore struct {
	id, name    string
	created     time.Time
	clientToken string
	props       string // JSON of the optional configurations (see control.go)
	dir         string
	isDefault   bool

	// mu guards status and st; inflight counts the requests and jobs using
	// st, so that a delete closes it only once they are done.
	mu       sync.Mutex
	status   string
	st       *store
	inflight sync.WaitGroup
}

func (d *datastore) snapshot() (status, props string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status, d.props
}

// registry holds the data stores of a Server.
type registry struct {
	ctl *controlDB
	dir string
	cfg storeConfig

	mu     sync.Mutex
	byID   map[string]*datastore
	list   []*datastore // in creation order, the default first
	closed bool
}

// openRegistry opens the default data store and the created ones that are
// ACTIVE (or were being created or deleted when the server stopped: those
// are finished now).
func openRegistry(ctx context.Context, dir, defaultID string, ctl *controlDB, now time.Time, cfg storeConfig) (*registry, error) {
	reg := &registry{ctl: ctl, dir: dir, cfg: cfg, byID: map[string]*datastore{}}
	created, err := ctl.defaultCreated(ctx, now)
	if err != nil {
		return nil, err
	}
	st, err := openStore(ctx, dir, cfg)
	if err != nil {
		return nil, err
	}
	def := &datastore{id: defaultID, name: defaultID, created: created, props: "{}", dir: dir, isDefault: true, status: dsActive, st: st}
	reg.add(def)
	recs, err := ctl.datastores(ctx)
	if err != nil {
		_ = reg.close()
		return nil, err
	}
	for _, r := range recs {
		if r.id == defaultID {
			continue
		}
		d := &datastore{id: r.id, name: r.name, created: r.created, clientToken: r.clientToken, props: r.props,
			dir: filepath.Join(dir, datastoresDir, r.id), status: r.status}
		reg.add(d)
		switch r.status {
		case dsCreating, dsActive:
			reg.activate(ctx, d)
		case dsDeleting:
			reg.finishDelete(ctx, d)
		}
	}
	return reg, nil
}

func (reg *registry) add(d *datastore) {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	reg.byID[d.id] = d
	reg.list = append(reg.list, d)
}

// get returns the data store id (in any status), or nil.
func (reg *registry) get(id string) *datastore {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	return reg.byID[id]
}

// all returns the data stores in creation order.
func (reg *registry) all() []*datastore {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	return slices.Clone(reg.list)
}

// byToken returns the created data store with the client token, or nil.
func (reg *registry) byToken(token string) *datastore {
	if token == "" {
		return nil
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	for _, d := range reg.list {
		if d.clientToken == token {
			return d
		}
	}
	return nil
}

// acquire returns the store of data store id if it is ACTIVE, and a release
// to call when done with it.
func (reg *registry) acquire(id string) (*store, func(), bool) {
	d := reg.get(id)
	if d == nil {
		return nil, nil, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.status != dsActive || d.st == nil {
		return nil, nil, false
	}
	d.inflight.Add(1)
	return d.st, d.inflight.Done, true
}

// create registers a new data store in status CREATING and opens its
// database in the background. It returns the new data store.
func (reg *registry) create(ctx context.Context, name, clientToken, props string, now time.Time) (*datastore, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	d := &datastore{id: id, name: name, created: now.UTC().Truncate(time.Millisecond), clientToken: clientToken, props: props,
		dir: filepath.Join(reg.dir, datastoresDir, id), status: dsCreating}
	if err := reg.ctl.putDatastore(ctx, d.record()); err != nil {
		return nil, err
	}
	reg.add(d)
	go reg.activate(context.WithoutCancel(ctx), d)
	return d, nil
}

func (d *datastore) record() dsRecord {
	status, props := d.snapshot()
	return dsRecord{id: d.id, name: d.name, status: status, created: d.created, clientToken: d.clientToken, props: props}
}

// activate opens d's database and makes it ACTIVE, or CREATE_FAILED.
func (reg *registry) activate(ctx context.Context, d *datastore) {
	st, err := openStore(ctx, d.dir, reg.cfg)
	reg.mu.Lock()
	if reg.closed { // the server closed meanwhile: the next start activates it
		reg.mu.Unlock()
		if st != nil {
			_ = st.close()
		}
		return
	}
	d.mu.Lock()
	if err != nil {
		d.status = dsCreateFailed
		d.props = withErrorCause(d.props, "The data store's database could not be created.")
	} else {
		d.status, d.st = dsActive, st
	}
	d.mu.Unlock()
	reg.mu.Unlock()
	_ = reg.ctl.putDatastore(ctx, d.record())
}

// errNotActive is returned by remove for a data store in transition.
var errNotActive = fmt.Errorf("the data store is not ACTIVE")

// remove moves d to DELETING and deletes its database in the background,
// once the requests using it are done; then d is DELETED (and listed so).
func (reg *registry) remove(ctx context.Context, d *datastore) error {
	d.mu.Lock()
	if d.status != dsActive && d.status != dsCreateFailed {
		d.mu.Unlock()
		return errNotActive
	}
	d.status = dsDeleting
	d.mu.Unlock()
	if err := reg.ctl.putDatastore(ctx, d.record()); err != nil {
		return err
	}
	go reg.finishDelete(context.WithoutCancel(ctx), d)
	return nil
}

func (reg *registry) finishDelete(ctx context.Context, d *datastore) {
	d.inflight.Wait()
	d.mu.Lock()
	st := d.st
	d.st = nil
	d.mu.Unlock()
	if st != nil {
		_ = st.close()
	}
	if err := os.RemoveAll(d.dir); err != nil {
		return // stays DELETING; the next start tries again
	}
	d.mu.Lock()
	d.status = dsDeleted
	d.mu.Unlock()
	_ = reg.ctl.putDatastore(ctx, d.record())
}

// close closes every open store, once the requests using them are done.
func (reg *registry) close() error {
	reg.mu.Lock()
	reg.closed = true
	reg.mu.Unlock()
	var first error
	for _, d := range reg.all() {
		d.inflight.Wait()
		d.mu.Lock()
		st := d.st
		d.mu.Unlock()
		if st != nil {
			if err := st.close(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// withErrorCause returns props with ErrorCause set to a non-retryable error
// with message msg.
func withErrorCause(props, msg string) string {
	var m map[string]any
	if json.Unmarshal([]byte(props), &m) != nil || m == nil {
		m = map[string]any{}
	}
	m["ErrorCause"] = map[string]string{"ErrorMessage": msg, "ErrorCategory": "NON_RETRYABLE_ERROR"}
	b, _ := json.Marshal(m)
	return string(b)
}
