package demo

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/pgtripwire/pgtripwire/model"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDemo runs what `make demo` runs, on fewer users, with --keep: while it is kept the
// printed metrics URL and DSN must work; once its context ends everything must be gone.
func TestDemo(t *testing.T) {
	out := &lockedBuffer{}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type result struct {
		rep *Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := Run(ctx, Options{Users: 20_000, Out: out, Keep: true})
		done <- result{rep, err}
	}()

	kept := regexp.MustCompile(`(?m)metrics +(\S+)\n.*database +(\S+) .*\n.*alert log +(\S+)\n`)
	var m []string
	deadline := time.After(3 * time.Minute) // a loaded 2-core machine under -race
	for m == nil {
		select {
		case r := <-done:
			t.Fatalf("demo returned before Ctrl-C with --keep: %v\noutput:\n%s", r.err, out)
		case <-deadline:
			cancel()
			<-done
			t.Fatalf("no --keep report within a minute; output:\n%s", out)
		case <-time.After(100 * time.Millisecond):
			m = kept.FindStringSubmatch(out.String())
		}
	}
	metricsURL, dsn, alertLog := m[1], m[2], m[3]
	if body := get(t, metricsURL); !strings.Contains(body, `role="intruder_dump"`) {
		t.Errorf("kept metrics lack the dump's rows:\n%s", body)
	}
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("kept database: %v", err)
	}
	var users int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM users`).Scan(&users); err != nil || users < 20_000 {
		t.Errorf("kept database: got %d users (%v), want the seeded ones", users, err)
	}
	conn.Close(t.Context())

	cancel() // Ctrl-C
	r := <-done
	if r.err != nil {
		t.Fatalf("%v\noutput:\n%s", r.err, out)
	}
	seen := map[string]bool{}
	for _, res := range r.rep.Results {
		seen[res.Scenario] = true
		if res.Required && !res.Detected {
			t.Errorf("scenario %q (role %s) not detected", res.Scenario, res.Role)
		}
		if res.Detected && (res.Alert.Labels[model.LabelRole] != res.Role || res.Alert.Labels[model.LabelTable] != "public.users") {
			t.Errorf("scenario %q: got alert labels %v, want role %s on public.users", res.Scenario, res.Alert.Labels, res.Role)
		}
	}
	for _, sc := range breaches() {
		if !seen[sc.name] {
			t.Errorf("scenario %q missing from the report", sc.name)
		}
	}
	if len(r.rep.FalseAlerts) != 0 {
		t.Errorf("got false alerts %+v, want none", r.rep.FalseAlerts)
	}
	text := out.String()
	for _, want := range []string{
		"seeding public.users: 10,000 of 20,000 accounts (50%)",
		"FIRING ", "CRITICAL SensitiveBulkRead intruder_copy",
		"CRITICAL SensitiveSweep intruder_sweep", "false alerts during benign traffic: 0",
		"removed the throwaway PostgreSQL",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, `{"time"`) {
		t.Errorf("output shows raw JSON alert lines, want them for a person:\n%s", text)
	}
	if _, err := os.Stat(alertLog); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("alert log %s still there after the demo (%v)", alertLog, err)
	}
	if conn, err := pgx.Connect(t.Context(), dsn); err == nil {
		conn.Close(t.Context())
		t.Errorf("PostgreSQL still accepts connections after the demo")
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A client of its own, closed here: goleak must not see its idle connections.
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(body)
}

func TestAlertPrinterWritesForAPerson(t *testing.T) {
	line := `{"time":"2026-11-29T06:00:00.123Z","state":"firing","rule":"SensitiveBulkRead",` +
		`"severity":"critical","fingerprint":"0011223344556677","value":100030,` +
		`"labels":{"role":"mallory","table":"public.users"},` +
		`"annotations":{"summary":"Bulk read of sensitive columns email of public.users by mallory"}}` + "\n"
	tests := []struct {
		name   string
		writes []string
		want   []string
	}{
		{
			name:   "one line in two writes",
			writes: []string{line[:40], line[40:]},
			want: []string{
				"FIRING " + time.Date(2026, 11, 29, 6, 0, 0, 123e6, time.UTC).Local().Format("15:04:05.000") +
					" CRITICAL SensitiveBulkRead mallory: value 100,030\n",
				"        Bulk read of sensitive columns email of public.users by mallory\n",
			},
		},
		{
			name:   "a line that is not an alert is passed through",
			writes: []string{"not json\n"},
			want:   []string{"ALERT not json\n"},
		},
		{
			name:   "a partial line waits for its end",
			writes: []string{line[:40]},
			want:   nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			p := &alertPrinter{out: &out}
			for _, w := range tt.writes {
				if n, err := p.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write: got %d, %v, want %d, nil", n, err, len(w))
				}
			}
			if got, want := out.String(), strings.Join(tt.want, ""); got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

func TestReportErrSaysWhatFailed(t *testing.T) {
	detected := Result{Scenario: "plain dump", Role: "a", Required: true, Detected: true}
	missed := Result{Scenario: "COPY TO STDOUT", Role: "b", Required: true}
	notYetMissed := Result{Scenario: "paginated sweep", Role: "c", CoveredBy: "windowed rules"}
	falseAlert := model.Alert{Rule: "SensitiveBulkRead", Labels: map[string]string{"role": "app"}}
	tests := []struct {
		name string
		rep  Report
		want string // "" for no error
	}{
		{"all required detected", Report{Results: []Result{detected, notYetMissed}}, ""},
		{"a required miss", Report{Results: []Result{detected, missed, notYetMissed}},
			`demo failed: not detected: "COPY TO STDOUT" (role b)`},
		{"a false alert", Report{Results: []Result{detected}, FalseAlerts: []model.Alert{falseAlert}},
			`demo failed: 1 false alert(s): SensitiveBulkRead for role app`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.rep.Err()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case tt.want != "" && (err == nil || err.Error() != tt.want):
				t.Errorf("got %v, want %s", err, tt.want)
			}
		})
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 100030: "100,030", -1234567: "-1,234,567"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d): got %q, want %q", n, got, want)
		}
	}
}

// lockedBuffer is read by the test while the demo writes to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
