package notify

import (
	"context"
	"errors"
	"slices"
	"testing"
)

// recorder is a stage that records what reaches it and fails when told to.
type recorder struct {
	name string
	err  error
	seen *[]string
}

func (r recorder) Exec(_ context.Context, ts ...Transition) ([]Transition, error) {
	for _, t := range ts {
		*r.seen = append(*r.seen, r.name+":"+t.Alert.Fingerprint)
	}
	return ts, r.err
}

func TestComposedStages(t *testing.T) {
	full := errors.New("no space left on device")
	tests := []struct {
		name    string
		stage   func(seen *[]string) Stage
		want    []string
		wantErr bool
	}{
		{"multi runs in order", func(seen *[]string) Stage {
			return MultiStage{recorder{"a", nil, seen}, recorder{"b", nil, seen}}
		}, []string{"a:x", "b:x"}, false},
		{"multi stops at a failure", func(seen *[]string) Stage {
			return MultiStage{recorder{"a", full, seen}, recorder{"b", nil, seen}}
		}, []string{"a:x"}, true},
		{"multi passes on what a stage returns", func(seen *[]string) Stage {
			drop := StageFunc(func(context.Context, ...Transition) ([]Transition, error) { return nil, nil })
			return MultiStage{drop, recorder{"b", nil, seen}}
		}, nil, false},
		{"fanout gives every stage the transitions despite a failure", func(seen *[]string) Stage {
			return Fanout{recorder{"a", full, seen}, recorder{"b", nil, seen}}
		}, []string{"a:x", "b:x"}, true},
		{"direct sends to the sink", func(seen *[]string) Stage {
			return Direct(sinkFunc(func(t Transition) error {
				*seen = append(*seen, "sink:"+t.Alert.Fingerprint)
				return nil
			}))
		}, []string{"sink:x"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seen []string
			_, err := tt.stage(&seen).Exec(t.Context(), firing("x"))
			if !slices.Equal(seen, tt.want) {
				t.Errorf("got %v, want %v", seen, tt.want)
			}
			if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, full)) {
				t.Errorf("got error %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

type sinkFunc func(Transition) error

func (f sinkFunc) Name() string                               { return "func" }
func (f sinkFunc) Send(_ context.Context, t Transition) error { return f(t) }
