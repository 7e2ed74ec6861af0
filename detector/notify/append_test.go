package notify

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgtripwire/pgtripwire/model"
)

func responseAlert(i int, state model.State) model.Alert {
	labels := map[string]string{"response_to": "0123456789abcdef", "response_id": fmt.Sprint(i)}
	return model.Alert{Time: time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC), State: state, Rule: "ResponseTaken",
		Severity: model.SeverityWarning, Fingerprint: model.Fingerprint("ResponseTaken", labels), Labels: labels,
		Annotations: map[string]string{model.AnnotationSummary: "response"}}
}

// TestAppendAlertLinesBesideARunningAlertLog appends from many goroutines (standing
// for other processes: each call opens the file itself) while the detector's AlertLog
// writes its own lines: every line is whole, and each call's pair stays together.
func TestAppendAlertLinesBesideARunningAlertLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "logs", "alerts.jsonl") // the directory is missing too
	l, err := openAlertLog(path, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	const appenders, detectorLines = 20, 200
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range detectorLines {
			if err := send(l, responseAlert(-1-i, model.StateFiring)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for i := range appenders {
		wg.Go(func() {
			if err := AppendAlertLines(path, responseAlert(i, model.StateFiring), responseAlert(i, model.StateResolved)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []model.Alert
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var a model.Alert
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("line %q is not an alert: %v", sc.Text(), err)
		}
		got = append(got, a)
	}
	if want := detectorLines + 2*appenders; len(got) != want {
		t.Fatalf("got %d lines, want %d", len(got), want)
	}
	for i, a := range got {
		if a.State == model.StateFiring && a.Labels["response_id"][0] != '-' {
			if i+1 == len(got) || got[i+1].Fingerprint != a.Fingerprint || got[i+1].State != model.StateResolved {
				t.Errorf("line %d: the firing line of response %s is not followed by its resolved line", i+1, a.Labels["response_id"])
			}
		}
	}
}

func TestAppendAlertLinesEndsATornLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alerts.jsonl")
	if err := os.WriteFile(path, []byte(`{"time":"2026-12-01T06:00:00Z","sta`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := AppendAlertLines(path, responseAlert(1, model.StateFiring), responseAlert(1, model.StateResolved)); err != nil {
		t.Fatal(err)
	}
	last, skipped, err := ReadAlertLogStates(path)
	if err != nil {
		t.Fatal(err)
	}
	a := responseAlert(1, model.StateResolved)
	if skipped != 1 || last[a.Fingerprint].State != model.StateResolved {
		t.Errorf("got %d skipped and %v, want the torn line skipped alone and the response resolved", skipped, last)
	}
}
