package pgserver

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestCopyDataDirLeavesOutWhatABaseBackupDoes: the standby must not inherit
// the primary's postmaster.pid (it would refuse to start), its slots, its WAL
// segments (it streams them) or its temporary state, yet it needs the
// directories themselves.
func TestCopyDataDirLeavesOutWhatABaseBackupDoes(t *testing.T) {
	t.Parallel()
	src, dst := t.TempDir(), t.TempDir()
	for _, f := range []string{
		"PG_VERSION", "postgresql.auto.conf", "global/pg_control", "base/1/1259", "base/1/pg_internal.init",
		"postmaster.pid", "postmaster.opts", "backup_label.old",
		"pg_wal/000000010000000000000001", "pg_wal/archive_status/000000010000000000000001.done",
		"pg_replslot/primary_slot/state", "pg_stat_tmp/global.stat", "pg_subtrans/0000",
		"pg_notify/0000", "pg_snapshots/00000003-0000001B-1", "base/pgsql_tmp/pgsql_tmp123.0",
	} {
		path := filepath.Join(src, f)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"pg_dynshmem", "pg_serial"} {
		if err := os.Mkdir(filepath.Join(src, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := copyDataDir(t.Context(), src, dst); err != nil {
		t.Fatal(err)
	}
	var got []string
	err := filepath.WalkDir(dst, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dst, path)
		if d.IsDir() {
			rel += "/"
		}
		got = append(got, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"./", "PG_VERSION", "base/", "base/1/", "base/1/1259", "global/", "global/pg_control",
		"pg_dynshmem/", "pg_notify/", "pg_replslot/", "pg_serial/", "pg_snapshots/", "pg_stat_tmp/",
		"pg_subtrans/", "pg_wal/", "pg_wal/archive_status/", "postgresql.auto.conf",
	}
	if !slices.Equal(got, want) {
		t.Errorf("copied\n%q\nwant\n%q", got, want)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "base/1/1259")); err != nil || string(b) != "base/1/1259" {
		t.Errorf("base/1/1259 = %q, %v; want the source's content", b, err)
	}
}
