package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(t.Context(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestCheckReportsEveryErrorWithPosition(t *testing.T) {
	path := filepath.Join("testdata", "unknown-key-and-wrong-type.bad.yaml")
	code, stdout, stderr := runCLI(t, "check", "--config", path)
	if code != exitUsage {
		t.Fatalf("exit code: got %d, want %d\nstderr: %s", code, exitUsage, stderr)
	}
	for _, want := range []string{
		path + ":6:5: ",  // the unknown key "colour"
		path + ":9:15: ", // the interval that is not a duration
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if !strings.Contains(stderr, "colour") || !strings.Contains(stderr, "fast") {
		t.Errorf("stderr does not name the unknown key and the bad value:\n%s", stderr)
	}
	if strings.Contains(stderr+stdout, "s3cret") {
		t.Errorf("the DSN's password was printed:\n%s%s", stdout, stderr)
	}
}

func TestCheckAcceptsAGoodConfig(t *testing.T) {
	path := writeConfig(t, "postgres://pgtripwire:s3cret@127.0.0.1:5432/app", "127.0.0.1:9473", t.TempDir())
	code, stdout, stderr := runCLI(t, "check", "--config", path)
	if code != exitOK {
		t.Fatalf("exit code: got %d, want 0\nstderr: %s", code, stderr)
	}
	if !strings.Contains(stdout, "OK") || strings.Contains(stdout, "s3cret") {
		t.Fatalf("got stdout %q, want OK without the password", stdout)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	tests := [][]string{
		{"check"},                           // --config missing
		{"run", "--config"},                 // flag without value
		{"check", "--config", "x", "extra"}, // stray argument
		{"frobnicate"},                      // unknown command
		{},                                  // no command
		{"check", "--config", filepath.Join(t.TempDir(), "missing.yaml")},
		{"run", "--config", "x", "--log-format", "xml"},
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			if code, _, stderr := runCLI(t, args...); code != exitUsage {
				t.Fatalf("got exit %d, want %d\nstderr: %s", code, exitUsage, stderr)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := runCLI(t, "version")
	if code != exitOK || !strings.HasPrefix(stdout, "pgtripwire ") {
		t.Fatalf("got %d %q, want 0 and a version line", code, stdout)
	}
}

func TestRunFailsAtRuntimeWithExit1(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A state directory under a regular file cannot be created: a runtime failure.
	path := writeConfig(t, "postgres://x@127.0.0.1:1/app", "127.0.0.1:0", filepath.Join(blocker, "state"))
	if code, _, stderr := runCLI(t, "run", "--config", path); code != exitRuntime {
		t.Fatalf("got exit %d, want %d\nstderr: %s", code, exitRuntime, stderr)
	}
}

// TestRunStopsCleanlyOnSIGTERM runs the real binary against a real PostgreSQL.
func TestRunStopsCleanlyOnSIGTERM(t *testing.T) {
	bin := buildBinary(t)
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE public.users (id int, email text, username text, password_hash text)`)
	listen := freeAddr(t)
	path := writeConfig(t, db.SuperuserDSN(), listen, t.TempDir())

	cmd := exec.Command(bin, "run", "--config", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for !readyAt(listen) {
		if time.Now().After(deadline) {
			t.Fatalf("not ready within 30s; stderr:\n%s", stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("got %v after SIGTERM, want exit 0; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("still running 15s after SIGTERM; stderr:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "pgtripwire stopped") {
		t.Errorf("logs lack the clean-stop message:\n%s", stderr.String())
	}
}

func writeConfig(t *testing.T, dsn, listen, stateDir string) string {
	t.Helper()
	return writeConfigIn(t, t.TempDir(), dsn, listen, stateDir, "")
}

// writeConfigIn writes a config into dir (its alert log beside it) with extra YAML
// appended under alerts:.
func writeConfigIn(t *testing.T, dir, dsn, listen, stateDir, alertsExtra string) string {
	t.Helper()
	path := filepath.Join(dir, "pgtripwire.yaml")
	body := fmt.Sprintf(`database:
  dsn: %q
sensitive:
  - table: public.users
    columns: [email, username, password_hash]
http:
  listen: %q
alerts:
  file: %q
%sstate_dir: %q
`, dsn, listen, filepath.Join(filepath.Dir(path), "alerts.jsonl"), alertsExtra, stateDir)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func readyAt(addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// buildBinary builds the pgtripwire binary for t (the build cache makes it quick).
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pgtripwire")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
