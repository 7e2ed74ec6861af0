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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

func TestMain(m *testing.M) {
	code := pgtest.Run(m)
	if binary.dir != "" {
		_ = os.RemoveAll(binary.dir)
	}
	os.Exit(code)
}

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

// configFile is a configuration file of the binary's as these tests write it: public.users
// sensitive, HTTP on Listen, the alert log alerts.jsonl beside the file.
type configFile struct {
	DSN, Listen string
	// Columns are public.users' sensitive columns; none: email, username and password_hash.
	Columns []string
	// StateDir is state_dir; "" leaves the default (state, beside the file).
	StateDir string
	// HTTP and Alerts are more keys of the http: and alerts: sections, each line
	// indented by two spaces.
	HTTP, Alerts string
	// Sources is the body of the sources: section, indented by two spaces; "" leaves
	// every source at its default.
	Sources string
}

// write writes c into dir as pgtripwire.yaml and returns its path.
func (c configFile) write(t *testing.T, dir string) string {
	t.Helper()
	columns := c.Columns
	if len(columns) == 0 {
		columns = []string{"email", "username", "password_hash"}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "database:\n  dsn: %q\n", c.DSN)
	fmt.Fprintf(&b, "sensitive:\n  - table: public.users\n    columns: [%s]\n", strings.Join(columns, ", "))
	fmt.Fprintf(&b, "http:\n  listen: %q\n%s", c.Listen, c.HTTP)
	fmt.Fprintf(&b, "alerts:\n  file: alerts.jsonl\n%s", c.Alerts)
	if c.StateDir != "" {
		fmt.Fprintf(&b, "state_dir: %q\n", c.StateDir)
	}
	if c.Sources != "" {
		fmt.Fprintf(&b, "sources:\n%s", c.Sources)
	}
	path := filepath.Join(dir, "pgtripwire.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeConfig writes the plainest configuration, with the state directory given, into
// a directory of its own.
func writeConfig(t *testing.T, dsn, listen, stateDir string) string {
	t.Helper()
	return configFile{DSN: dsn, Listen: listen, StateDir: stateDir}.write(t, t.TempDir())
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

// binary is the pgtripwire binary the tests run, built once per test process: a link
// takes seconds, and up to 20 on a loaded CI machine. TestMain removes it.
var binary struct {
	once      sync.Once
	dir, path string
	out       []byte
	err       error
}

// buildBinary returns the path of the pgtripwire binary, building it on first use.
// Tests only run it.
func buildBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		if binary.dir, binary.err = os.MkdirTemp("", "pgtripwire-cmd-test-"); binary.err != nil {
			return
		}
		binary.path = filepath.Join(binary.dir, "pgtripwire")
		binary.out, binary.err = exec.Command("go", "build", "-o", binary.path, ".").CombinedOutput()
	})
	if binary.err != nil {
		t.Fatalf("go build: %v\n%s", binary.err, binary.out)
	}
	return binary.path
}
