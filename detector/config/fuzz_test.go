package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, and that every failure is
// reported as config errors that point into the file.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(minimal))
	f.Add([]byte("a: &a [x, x]\nsensitive: [{table: s.t, columns: *a}, {table: s.u, columns: *a}]\n"))
	f.Add([]byte("database: {dsn: 'host=db password=x'}\n" + minimal))

	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data, nil)
		if err == nil {
			if cfg == nil || len(cfg.Sensitive) == 0 {
				t.Fatalf("Parse succeeded with config %+v", cfg)
			}
			_ = cfg.RedactedDSN()
			return
		}
		if cfg != nil {
			t.Errorf("Parse returned a config along with %v", err)
		}
		var errs Errors
		if !errors.As(err, &errs) || len(errs) == 0 {
			t.Fatalf("error %v (%T) is not config.Errors", err, err)
		}
		for _, e := range errs {
			if e.Line < 1 || e.File != "fuzz.yaml" {
				t.Errorf("error without a place in the file: %#v", e)
			}
		}
	})
}
