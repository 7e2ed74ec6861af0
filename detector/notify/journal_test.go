package notify

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/internal/atomicfile"
	"github.com/pgtripwire/pgtripwire/internal/testkit/amtest"
	"github.com/pgtripwire/pgtripwire/model"
)

func activeFor(role string, at time.Time) *activeAlert {
	a := transition("SensitiveBulkRead", role, model.StateFiring, at)
	return &activeAlert{Alert: a, StartsAt: at}
}

// reopen closes j and opens its files again, returning what they restore.
func reopen(t *testing.T, j *journal[activeAlert]) (*journal[activeAlert], map[string]*activeAlert) {
	t.Helper()
	if err := j.close(); err != nil {
		t.Fatal(err)
	}
	j, active, lost, err := openJournal[activeAlert](j.path, "active")
	if err != nil || lost != nil {
		t.Fatalf("reopen: err %v, lost %v", err, lost)
	}
	t.Cleanup(func() { j.close() })
	return j, active
}

func fingerprints(m map[string]*activeAlert) []string {
	var out []string
	for fp := range maps.Keys(m) {
		out = append(out, fp)
	}
	return out
}

func TestJournalRestoresTornAndCompacted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alertmanager-active.json")
	j, active, lost, err := openJournal[activeAlert](path, "active")
	if err != nil || lost != nil || len(active) != 0 {
		t.Fatalf("open a new set: %v %v %v", active, lost, err)
	}
	now := time.Now().UTC()
	a, b := activeFor("a", now), activeFor("b", now)
	active[a.Alert.Fingerprint], active[b.Alert.Fingerprint] = a, b
	if err := j.append(active, true, a.Alert.Fingerprint, b.Alert.Fingerprint); err != nil {
		t.Fatal(err)
	}
	delete(active, a.Alert.Fingerprint)
	if err := j.append(active, true, a.Alert.Fingerprint); err != nil {
		t.Fatal(err)
	}
	j, got := reopen(t, j)
	if len(got) != 1 || got[b.Alert.Fingerprint] == nil {
		t.Fatalf("restored %v, want b only", fingerprints(got))
	}

	// A crash mid-append leaves a torn line: it is cut, and what is appended after the
	// restart is replayed at the next one.
	f, err := os.OpenFile(path+".journal", os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"k":"c","v":{"alert":`); err != nil {
		t.Fatal(err)
	}
	f.Close()
	j, got = reopen(t, j)
	c := activeFor("c", now)
	got[c.Alert.Fingerprint] = c
	if err := j.append(got, true, c.Alert.Fingerprint); err != nil {
		t.Fatal(err)
	}
	j, got = reopen(t, j)
	if len(got) != 2 || got[b.Alert.Fingerprint] == nil || got[c.Alert.Fingerprint] == nil {
		t.Fatalf("after a torn line and a restart: %v, want b and c", fingerprints(got))
	}

	// Enough transitions make a snapshot and empty the journal; the set is the same.
	for i := range compactAfter + 10 {
		got[c.Alert.Fingerprint].Alert.Value = float64(i)
		if err := j.append(got, false, c.Alert.Fingerprint); err != nil {
			t.Fatal(err)
		}
	}
	if j.records > len(got)+compactAfter {
		t.Errorf("journal records after %d transitions: %d, want a compaction", compactAfter+10, j.records)
	}
	want := len(got)
	_, got = reopen(t, j)
	if len(got) != want || got[c.Alert.Fingerprint].Alert.Value != compactAfter+9 {
		t.Errorf("after compaction: %d alerts restored (c's value %v), want %d (c's last value)", len(got), got[c.Alert.Fingerprint].Alert.Value, want)
	}
}

// A snapshot damaged beyond its previous generation is reported as lost, not silently
// reset, and the Notifier says so with a DetectorStateLost event.
func TestDamagedActiveSetIsLost(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "alertmanager-active.json")
	for _, p := range []string{path, path + atomicfile.PrevSuffix} {
		if err := os.WriteFile(p, []byte("#pgtripwire-seal len=99 sha256=00\n{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := start(t, Config{StateDir: dir, Alertmanager: amConfig("http://127.0.0.1:1")})
	evs := r.n.Lost(time.Now())
	if len(evs) != 1 || evs[0].Kind != model.KindStateLost || evs[0].Object != "alertmanager-active.json" {
		t.Fatalf("Lost: %+v, want one state_lost event naming alertmanager-active.json", evs)
	}
}

// The cost of a transition does not grow with the active set: it appends one line.
func BenchmarkActiveSetTransition(b *testing.B) {
	for _, n := range []int{100, 3000} {
		b.Run(fmt.Sprint("active=", n), func(b *testing.B) {
			j, active, _, err := openJournal[activeAlert](filepath.Join(b.TempDir(), "alertmanager-active.json"), "active")
			if err != nil {
				b.Fatal(err)
			}
			defer j.close()
			now := time.Now()
			for i := range n {
				a := activeFor(fmt.Sprint("r", i), now)
				active[a.Alert.Fingerprint] = a
			}
			if err := j.compact(active); err != nil {
				b.Fatal(err)
			}
			fp := fingerprints(active)[0]
			b.ResetTimer()
			for b.Loop() {
				if err := j.append(active, true, fp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Alerts the rule state holds firing stay in Alertmanager across a restart that lost
// the active set: Firing adds them back and they are re-sent, not dropped after four
// re-send intervals nor resolved after resolveAfter.
func TestFiringAlertsSurviveALostActiveSet(t *testing.T) {
	am := amtest.Start(t)
	dir := t.TempDir()
	cfg := Config{StateDir: dir, Alertmanager: amConfig(am.URL), ResolveAfter: 2 * time.Second}
	first := start(t, cfg)
	a := transition("SensitiveBulkRead", "mallory", model.StateFiring, time.Now())
	first.write(t, a)
	eventually(t, 10*time.Second, "the alert in Alertmanager", func() bool {
		_, ok := am.Find(t, map[string]string{"role": "mallory"})
		return ok
	})
	first.stop()
	for _, suffix := range []string{"", ".journal", atomicfile.PrevSuffix} {
		if err := os.Remove(filepath.Join(dir, "alertmanager-active.json"+suffix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	second := start(t, cfg)
	if err := second.n.Firing([]model.Alert{a}); err != nil {
		t.Fatal(err)
	}
	// Four re-send intervals (2 s) and resolveAfter (2 s) pass; the alert stays.
	time.Sleep(3 * time.Second)
	if _, ok := am.Find(t, map[string]string{"role": "mallory"}); !ok {
		t.Fatal("the alert the rule state holds firing was dropped by Alertmanager after the restart")
	}
}

// A journal damaged before its last line is not taken for a crash's tear: the records
// after the damage are lost, and openJournal says so.
func TestJournalDamagedInTheMiddleIsLost(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alertmanager-active.json")
	j, active, _, err := openJournal[activeAlert](path, "active")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, role := range []string{"a", "b", "c"} {
		a := activeFor(role, now)
		active[a.Alert.Fingerprint] = a
		if err := j.append(active, true, a.Alert.Fingerprint); err != nil {
			t.Fatal(err)
		}
	}
	j.close()
	data, err := os.ReadFile(path + ".journal")
	if err != nil {
		t.Fatal(err)
	}
	second := bytes.IndexByte(data, '\n') + 1
	data[second+3] = 0xff // inside the second record
	if err := os.WriteFile(path+".journal", data, 0o600); err != nil {
		t.Fatal(err)
	}
	j, active, lost, err := openJournal[activeAlert](path, "active")
	if err != nil {
		t.Fatal(err)
	}
	defer j.close()
	if lost == nil || len(active) != 1 {
		t.Errorf("after damage in the middle: lost %v, %d alerts restored; want it said, and the first alert", lost, len(active))
	}
}

// Release drops a cluster's alerts from the active set, durably and without resolving
// them (another detector holds them now); the other clusters' stay.
func TestReleaseDropsAClustersAlertsWithoutResolvingThem(t *testing.T) {
	am := amtest.Start(t)
	dir := t.TempDir()
	cfg := Config{StateDir: dir, Alertmanager: amConfig(am.URL), ResolveAfter: time.Hour}
	first := start(t, cfg)
	in := func(cluster, role string) model.Alert {
		a := transition("SensitiveBulkRead", role, model.StateFiring, time.Now())
		a.Labels[model.LabelCluster] = cluster
		a.Fingerprint = model.Fingerprint(a.Rule, a.Labels)
		return a
	}
	eu, us := in("eu", "mallory"), in("us", "eve")
	first.write(t, eu)
	first.write(t, us)
	if err := first.n.Release("eu"); err != nil {
		t.Fatal(err)
	}
	first.stop()
	second := start(t, cfg)
	got := second.n.am.active
	if _, ok := got[eu.Fingerprint]; ok {
		t.Error("eu's alert is still in the active set after Release(eu)")
	}
	if act, ok := got[us.Fingerprint]; !ok || !act.Resolved.IsZero() {
		t.Errorf("us's alert: in the active set %v, resolved %v; want it firing there", ok, ok && !act.Resolved.IsZero())
	}
	data, err := os.ReadFile(filepath.Join(dir, "alerts.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(`"state":"resolved"`)) {
		t.Errorf("Release wrote a resolution:\n%s", data)
	}
}
