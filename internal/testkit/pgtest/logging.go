package pgtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgtripwire/pgtripwire/internal/pgserver"
)

// NewLoggingServer starts a cluster for t alone (NewServer) whose log is written the way
// pgtripwire's log source reads it: the logging collector on, log_destination (jsonlog,
// csvlog, or both: "jsonlog,csvlog"), failed statements logged with their text, English
// messages, and settings added to or overriding those. It returns the server and its
// log directory (log_directory 'log' in the data directory: the harness's server user
// owns it, and the test reads it as that user or as root).
func NewLoggingServer(t testing.TB, destination string, settings map[string]string) (*pgserver.Server, string) {
	t.Helper()
	all := map[string]string{
		"logging_collector":       "on",
		"log_destination":         destination,
		"log_directory":           "log",
		"log_filename":            "postgresql-%Y-%m-%d_%H%M%S.log",
		"log_rotation_age":        "0",
		"log_rotation_size":       "0",
		"log_min_error_statement": "error",
		"lc_messages":             "C",
	}
	for k, v := range settings {
		all[k] = v
	}
	srv := NewServer(t, all)
	return srv, filepath.Join(srv.DataDir(), "log")
}

// RequirePassword makes the cluster ask every TCP connection of role for its password
// (scram-sha-256), where the harness trusts every connection, and sets it to password:
// what a test of failed logins needs. It reloads the configuration.
func RequirePassword(t testing.TB, srv *pgserver.Server, role, password string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	hba := filepath.Join(srv.DataDir(), "pg_hba.conf")
	old, err := os.ReadFile(hba)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	line := "host all " + role + " 127.0.0.1/32 scram-sha-256\n"
	// Written in place: the file keeps its owner, the server's user.
	if err := os.WriteFile(hba, []byte(line+string(old)), 0); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := srv.Exec(ctx, "postgres", `ALTER ROLE `+quoteIdent(role)+` PASSWORD '`+strings.ReplaceAll(password, "'", "''")+`'`); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := srv.Exec(ctx, "postgres", `SELECT pg_reload_conf()`); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
