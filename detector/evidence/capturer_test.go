package evidence

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/model"
)

// An idle capturer keeps capturing: the rest after a capture, once over, must not be
// waited for again (a timer's channel fires once) after a prune while nothing was
// pending. The server is unreachable here: the evidence is saved with the problem.
func TestCapturerKeepsCapturingAfterAnIdlePrune(t *testing.T) {
	store := NewStore(t.TempDir(), time.Hour, 10)
	c := NewCapturer(Options{
		Connect: func(context.Context, string) (*pgx.Conn, error) { return nil, errors.New("no server here") },
		Store:   store, Now: time.Now, Logger: zap.NewNop(), Registerer: prometheus.NewRegistry(),
	})
	c.pruneEvery = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	saved := func(fp string) bool {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := store.Load(fp); err == nil {
				return true
			}
			time.Sleep(10 * time.Millisecond)
		}
		return false
	}
	for _, fp := range []string{"000000000000000a", "000000000000000b"} {
		c.Fired(model.Alert{Fingerprint: fp, Rule: "R", Time: time.Now(), Labels: map[string]string{}}, nil, false)
		if !saved(fp) {
			t.Fatalf("the evidence of %s was never captured", fp)
		}
		time.Sleep(100 * time.Millisecond) // idle, through a few prunes
	}
}

// The related alerts are the role's others of the hour before, newest first: not
// another role's, not the alert itself fired again, not older than the hour.
func TestRelatedAlertsAreTheRolesOwnOfTheHour(t *testing.T) {
	c := NewCapturer(Options{Store: NewStore(t.TempDir(), time.Hour, 10), Now: time.Now, Logger: zap.NewNop(),
		Registerer: prometheus.NewRegistry()})
	t0 := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	fire := func(fp, role string, at time.Duration) []Related {
		return c.remember(model.Alert{Fingerprint: fp, Rule: "R" + fp, Time: t0.Add(at), Labels: map[string]string{model.LabelRole: role}})
	}
	fire("a", "mallory", 0)
	fire("b", "mallory", 10*time.Minute)
	fire("c", "eve", 20*time.Minute)
	fire("d", "mallory", 30*time.Minute)
	got := fire("d", "mallory", 65*time.Minute) // the same alert again, an hour after a
	var fps []string
	for _, r := range got {
		fps = append(fps, r.Fingerprint)
	}
	if want := []string{"b"}; !slices.Equal(fps, want) {
		t.Errorf("got related %v, want %v (newest first, the hour before, mallory's, not itself)", fps, want)
	}
	if got := fire("e", "", 66*time.Minute); got != nil {
		t.Errorf("an alert without a role: got related %+v, want none", got)
	}
}
