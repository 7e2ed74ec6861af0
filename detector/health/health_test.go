package health

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestReadyFollowsEveryComponent(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := New(reg)
	if ok, _ := s.Ready(); ok {
		t.Fatal("got ready with no component registered, want unready")
	}
	s.Register("statements")
	s.Register("catalog")
	if ok, why := s.Ready(); ok || why["statements"] != "starting" {
		t.Fatalf("got ready=%v why=%v, want unready, statements starting", ok, why)
	}
	s.Set("statements", nil)
	s.Set("catalog", nil)
	if ok, why := s.Ready(); !ok {
		t.Fatalf("got unready (%v), want ready", why)
	}
	s.Set("statements", errors.New("connection refused"))
	ok, why := s.Ready()
	if ok || why["statements"] != "connection refused" {
		t.Fatalf("got ready=%v why=%v, want unready with the error", ok, why)
	}
	if got := testutil.ToFloat64(s.up.WithLabelValues("statements")); got != 0 {
		t.Fatalf("pgtripwire_source_up{statements}: got %v, want 0", got)
	}
	if got := testutil.ToFloat64(s.up.WithLabelValues("catalog")); got != 1 {
		t.Fatalf("pgtripwire_source_up{catalog}: got %v, want 1", got)
	}
}
