// Package amtest runs a real Alertmanager for tests: started from the binary installed
// on the machine (Debian's prometheus-alertmanager, or PGTRIPWIRE_ALERTMANAGER), on a
// free loopback port, with clustering off and a receiver that sends nowhere, so that
// tests can read back through its v2 API exactly what the detector delivered.
//
// It is for tests only. A missing binary fails the test: the project's scripts install it.
package amtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// BinaryEnv overrides where the Alertmanager binary is.
const BinaryEnv = "PGTRIPWIRE_ALERTMANAGER"

const config = `route:
  receiver: nowhere
  group_wait: 1s
receivers:
  - name: nowhere
`

// Alertmanager is one running (or stopped) Alertmanager.
type Alertmanager struct {
	URL  string // base URL, e.g. http://127.0.0.1:40123
	bin  string
	dir  string
	port int
	proc *exec.Cmd
	done chan struct{}
}

// Binary finds the Alertmanager binary or says how to install it.
func Binary() (string, error) {
	if b := os.Getenv(BinaryEnv); b != "" {
		return b, nil
	}
	for _, name := range []string{"prometheus-alertmanager", "alertmanager"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no Alertmanager binary (prometheus-alertmanager or alertmanager on PATH, or %s): "+
		"run scripts/install-deps.sh", BinaryEnv)
}

// Start runs an Alertmanager for t and stops it when t ends.
func Start(t testing.TB) *Alertmanager {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "alertmanager.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	am := &Alertmanager{URL: "http://127.0.0.1:" + strconv.Itoa(port), bin: bin, dir: dir, port: port}
	am.StartAgain(t)
	t.Cleanup(func() { am.Stop(t) })
	return am
}

// StartAgain starts a stopped Alertmanager on the same port, with empty memory (as a
// restarted Alertmanager has: alerts are not persisted), and waits until it is ready.
func (am *Alertmanager) StartAgain(t testing.TB) {
	t.Helper()
	cmd := exec.Command(am.bin,
		"--config.file="+filepath.Join(am.dir, "alertmanager.yml"),
		"--storage.path="+filepath.Join(am.dir, "data"),
		"--web.listen-address=127.0.0.1:"+strconv.Itoa(am.port),
		"--cluster.listen-address=",
		"--log.level=warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// Tie Alertmanager to this process, so a killed test leaves no server behind
	// (Pdeathsig follows the thread that started it: keep that thread alive).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	am.done = make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer close(am.done)
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
	}()
	if err := <-started; err != nil {
		t.Fatalf("start Alertmanager: %v", err)
	}
	am.proc = cmd
	deadline := time.Now().Add(20 * time.Second)
	for !am.ready() {
		select {
		case <-am.done:
			t.Fatal("Alertmanager exited during startup (see its log above)")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("Alertmanager not ready within 20s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (am *Alertmanager) ready() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, am.URL+"/-/ready", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Stop kills Alertmanager (as a crash or an outage would) and waits for it to exit.
func (am *Alertmanager) Stop(t testing.TB) {
	t.Helper()
	if am.proc == nil {
		return
	}
	_ = am.proc.Process.Kill()
	<-am.done
	am.proc = nil
}

// Alert is what GET /api/v2/alerts returns for one alert.
type Alert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Status       struct {
		State string `json:"state"`
	} `json:"status"`
}

// Alerts returns the alerts Alertmanager lists: those not yet resolved (its v2 API
// omits alerts whose endsAt has passed), silenced and inhibited ones included.
func (am *Alertmanager) Alerts(t testing.TB) []Alert {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(am.URL + "/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true")
	if err != nil {
		t.Fatalf("GET /api/v2/alerts: %v", err)
	}
	defer resp.Body.Close()
	var alerts []Alert
	if err := json.NewDecoder(resp.Body).Decode(&alerts); err != nil {
		t.Fatalf("decode /api/v2/alerts: %v", err)
	}
	return alerts
}

// Find returns the alert whose labels include all of want.
func (am *Alertmanager) Find(t testing.TB, want map[string]string) (Alert, bool) {
	t.Helper()
	for _, a := range am.Alerts(t) {
		match := true
		for k, v := range want {
			if a.Labels[k] != v {
				match = false
				break
			}
		}
		if match {
			return a, true
		}
	}
	return Alert{}, false
}
