package spec

import (
	"fmt"
	"os"

	"github.com/fhirload/fhirload/registry"
)

// Binary reads the trimmed package at path and returns the registry's binary form.
func Binary(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := Load(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r, err := registry.New(c)
	if err != nil {
		return nil, err
	}
	return r.MarshalBinary()
}
