package detectortest

import (
	"fmt"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/detector/source/activity"
	"github.com/pgtripwire/pgtripwire/detector/source/registry"
	"github.com/pgtripwire/pgtripwire/detector/source/wal"
)

// fatalRecorder is a testing.TB whose Fatalf records the failure instead of ending the
// test; PollEvery calls nothing else of it.
type fatalRecorder struct {
	testing.TB
	failure string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) { r.failure = fmt.Sprintf(format, args...) }

func TestEverySourceTurnsEveryPollingSourceOn(t *testing.T) {
	cfg := config.Defaults()
	for _, c := range cfg.Sources.All() {
		switch s := c.Settings.(type) {
		case *source.PollSettings:
			s.Enabled = false
		case *activity.Settings:
			s.Enabled = false
		}
	}
	const interval = 250 * time.Millisecond
	EverySource(t, cfg, interval)

	if got, want := len(cfg.Sources.All()), len(registry.Sources); got != want {
		t.Fatalf("got %d sources in the defaults, want the registry's %d", got, want)
	}
	for _, c := range cfg.Sources.All() {
		switch s := c.Settings.(type) {
		case *source.PollSettings:
			if !s.Enabled || s.Interval != interval {
				t.Errorf("source %s: got enabled %v interval %v, want on at %v", c.Name, s.Enabled, s.Interval, interval)
			}
		case *activity.Settings:
			if !s.Enabled || s.Interval != interval {
				t.Errorf("source %s: got enabled %v interval %v, want on at %v", c.Name, s.Enabled, s.Interval, interval)
			}
		case *wal.Settings:
			if *s != *wal.Definition.Settings().(*wal.Settings) {
				t.Errorf("source %s: got %+v, want its defaults: it has no interval", c.Name, *s)
			}
		}
	}
}

// unknownSettings stands for the settings of a source added after PollEvery was written.
type unknownSettings struct{ source.PollSettings }

func TestPollEveryFailsForSettingsItDoesNotKnow(t *testing.T) {
	r := &fatalRecorder{}
	PollEvery(r, "new", &unknownSettings{}, time.Second)
	if r.failure == "" {
		t.Fatal("got no failure for a source whose settings PollEvery does not know, want one: the source would escape the tests of every source")
	}
	t.Logf("PollEvery: %s", r.failure)
}
