package notify

import (
	"bytes"
	"context"
	"sync"

	"github.com/pgtripwire/pgtripwire/model"
)

func contains(b []byte, s string) bool { return bytes.Contains(b, []byte(s)) }

// send gives one transition to a sink, as the stage in front of it does.
func send(s Sink, a model.Alert) error { return s.Send(context.Background(), Transition{Alert: a}) }

// healthRecorder is a Health that keeps each component's latest state.
type healthRecorder struct {
	mu    sync.Mutex
	state map[string]error
}

func (h *healthRecorder) Set(component string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state == nil {
		h.state = make(map[string]error)
	}
	h.state[component] = err
}

// problems returns the components reported unhealthy, with why.
func (h *healthRecorder) problems() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := make(map[string]string)
	for c, err := range h.state {
		if err != nil {
			p[c] = err.Error()
		}
	}
	return p
}
