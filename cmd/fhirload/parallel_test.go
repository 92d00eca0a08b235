package main

// The slowest end-to-end tests of this package (crash rounds, chaos and
// flaky-network loads, the whole-sample verify, the every-type load) call
// t.Parallel: they spend most of their time waiting on the fhirload, serve
// and moto processes they start, so two of them at a time (go test's
// -parallel default, GOMAXPROCS) overlap waits instead of adding them.
// Each works in its own folders, store, bucket and queue, and none calls
// t.Setenv or runs realMain beside another. They still run after every
// sequential test of the package, never beside one.
