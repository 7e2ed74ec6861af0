package main

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

// SIGHUP reloads the rule files: a broken file is refused and the rules keep running,
// a fixed one is taken. The rewrites keep each file's size and modification time, so
// that the detector's own watch for changed files cannot be what reloads them.
func TestRunReloadsRulesOnSIGHUP(t *testing.T) {
	bin := buildBinary(t)
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE public.users (id int, email text, username text, password_hash text)`)
	listen := freeAddr(t)
	dir := t.TempDir()
	rules := filepath.Join(dir, "local.yml")
	write := func(threshold string) {
		t.Helper()
		stamp := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		body := `groups:
  - name: local
    rules:
      - name: LocalBulkRead
        description: A local rule; its threshold is rewritten by the test.
        severity: critical
        match: size(event.sensitive_read) > 0
        aggregate: {function: max, field: rows_per_call, window: 1m, by: [role]}
        condition:
          threshold: {op: ">=", value: ` + threshold + `}
`
		if err := os.WriteFile(rules, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(rules, stamp, stamp); err != nil {
			t.Fatal(err)
		}
	}
	write("1000")
	path := configFile{DSN: db.SuperuserDSN(), Listen: listen, StateDir: filepath.Join(dir, "state")}.write(t, dir)
	appendFile(t, path, "rules:\n  files: [local.yml]\n")

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
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
	})
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 30s; stderr:\n%s", what, stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("ready detector", func() bool { return readyAt(listen) })
	reloads := func(result string) int {
		resp, err := http.Get("http://" + listen + "/metrics")
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		m := regexp.MustCompile(`pgtripwire_rule_reloads_total\{result="` + result + `"\} (\d+)`).FindSubmatch(body)
		if m == nil {
			return -1
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}

	write("ten0") // same length as 1000: a YAML string where a number belongs
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor("refused reload", func() bool { return reloads("failure") == 1 })
	if !readyAt(listen) {
		t.Fatalf("not ready after a refused reload; stderr:\n%s", stderr.String())
	}
	write("2000")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor("successful reload", func() bool { return reloads("success") == 1 })
	if n := reloads("failure"); n != 1 {
		t.Errorf("failed reloads: got %d, want 1", n)
	}
}

// A SIGHUP right after start (a config-management tool reloading the service it just
// started) must not kill the detector: its default action does, until the process has
// said it handles it. main does so first thing; what remains is the time the process
// takes to reach Go code at all (a few milliseconds).
func TestSIGHUPRightAfterStartDoesNotKill(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	// A database that does not answer: this is about the process, not the sources.
	config := configFile{DSN: "postgres://nobody@127.0.0.1:1/none", Listen: "127.0.0.1:0", StateDir: filepath.Join(dir, "state")}.write(t, dir)
	for i := range 5 {
		cmd := exec.Command(bin, "run", "--config", config)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("run %d: the process is gone after a SIGHUP 50 ms after start: %v", i, err)
		}
		err := cmd.Wait()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGHUP {
				t.Fatalf("run %d: killed by the SIGHUP sent 50 ms after start", i)
			}
		}
	}
}
