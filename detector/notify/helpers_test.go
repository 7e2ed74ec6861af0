package notify

import (
	"bytes"
	"context"

	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/model"
	"github.com/prometheus/client_golang/prometheus"
)

func contains(b []byte, s string) bool { return bytes.Contains(b, []byte(s)) }

// send gives one transition to a sink, as the stage in front of it does.
func send(s Sink, a model.Alert) error { return s.Send(context.Background(), Transition{Alert: a}) }

// healthRecorder is the detector's health, with the components reported unhealthy.
type healthRecorder struct{ *health.Status }

func newHealthRecorder() *healthRecorder {
	return &healthRecorder{health.New(prometheus.NewRegistry())}
}

// problems returns the components reported unhealthy, with why.
func (h *healthRecorder) problems() map[string]string {
	_, p := h.Ready()
	return p
}
