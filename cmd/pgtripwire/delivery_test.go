package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/internal/testkit/amtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// process is a running pgtripwire binary.
type process struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{} // closed when it has exited
}

func startBinary(t *testing.T, bin, config, listen string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, "run", "--config", config), stderr: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	deadline := time.Now().Add(30 * time.Second)
	for !readyAt(listen) {
		if time.Now().After(deadline) {
			t.Fatalf("not ready within 30s; stderr:\n%s", p.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return p
}

// kill sends SIGKILL (no shutdown code runs, as in a crash) and waits for the exit.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// TestKilledDetectorDeliversItsSpoolAfterRestart: an alert that fired while
// Alertmanager was down survives kill -9 in the spool and reaches Alertmanager after
// the restart, exactly as the alert log recorded it.
func TestKilledDetectorDeliversItsSpoolAfterRestart(t *testing.T) {
	bin := buildBinary(t)
	am := amtest.Start(t)
	am.Stop(t) // down when the alert fires
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE public.users (id int, email text, username text, password_hash text);
		INSERT INTO public.users SELECT i, 'u' || i, 'u' || i, md5(i::text) FROM generate_series(1, 3000) i`)
	db.CreateRole(t, "mallory")
	db.Exec(t, `GRANT SELECT ON public.users TO mallory`)

	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	listen := freeAddr(t)
	config := configFile{DSN: db.SuperuserDSN(), Listen: listen, StateDir: stateDir,
		// A long resend interval: only the spool can deliver within the test.
		Alerts: fmt.Sprintf("  alertmanager:\n    urls: [%q]\n    resend_interval: 1h\n", am.URL)}.write(t, dir)
	first := startBinary(t, bin, config, listen)

	if _, err := db.Conn(t, "mallory").Exec(t.Context(), `SELECT email, username, password_hash FROM users`); err != nil {
		t.Fatal(err)
	}
	var line model.Alert
	deadline := time.Now().Add(10 * time.Second)
	for {
		if a, ok := firstFiring(t, filepath.Join(dir, "alerts.jsonl")); ok && spooled(t, listen) == 1 {
			line = a
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no spooled alert within 10s; stderr:\n%s", first.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	first.kill()

	am.StartAgain(t)
	second := startBinary(t, bin, config, listen)
	var got amtest.Alert
	deadline = time.Now().Add(60 * time.Second)
	for {
		var ok bool
		if got, ok = am.Find(t, map[string]string{"alertname": line.Rule}); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spooled alert not delivered within 60s of the restart; stderr:\n%s", second.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	want := maps.Clone(line.Labels)
	want["alertname"], want["severity"] = line.Rule, string(line.Severity)
	if !maps.Equal(got.Labels, want) {
		t.Errorf("labels: got %v, want %v", got.Labels, want)
	}
	if !maps.Equal(got.Annotations, line.Annotations) {
		t.Errorf("annotations: got %v, want %v", got.Annotations, line.Annotations)
	}
	if got.StartsAt.Sub(line.Time).Abs() >= time.Millisecond {
		t.Errorf("startsAt: got %v, want the firing time %v", got.StartsAt, line.Time)
	}
	if n := len(am.Alerts(t)); n != 1 {
		t.Errorf("Alertmanager holds %d alerts, want exactly the one spooled", n)
	}
	deadline = time.Now().Add(10 * time.Second)
	for spooled(t, listen) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the delivered alert is still in the spool")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func firstFiring(t *testing.T, path string) (model.Alert, bool) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return model.Alert{}, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var a model.Alert
		if json.Unmarshal(sc.Bytes(), &a) == nil && a.State == model.StateFiring {
			return a, true
		}
	}
	return model.Alert{}, false
}

// spooled is how many transitions the detector listening on listen holds in its spool
// (pgtripwire_spool_entries): once spooled, a transition survives kill -9.
func spooled(t *testing.T, listen string) int {
	t.Helper()
	return int(metricValue(t, listen, "pgtripwire_spool_entries"))
}

// lockedBuffer is a process's stderr, read by the test while the process writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
