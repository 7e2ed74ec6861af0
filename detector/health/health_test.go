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
	if got := testutil.ToFloat64(s.up.WithLabelValues("statements", "", "", "")); got != 0 {
		t.Fatalf("pgtripwire_source_up{statements}: got %v, want 0", got)
	}
	if got := testutil.ToFloat64(s.up.WithLabelValues("catalog", "", "", "")); got != 1 {
		t.Fatalf("pgtripwire_source_up{catalog}: got %v, want 1", got)
	}
}

// Two databases' sources of one name are two components: one failing holds readiness
// back and is named with its place.
func TestScopedComponentsAreApart(t *testing.T) {
	s := New(prometheus.NewRegistry())
	app := s.At(Server{Cluster: "eu", Server: "db1:5432", Database: "app"})
	crm := s.At(Server{Cluster: "eu", Server: "db1:5432", Database: "crm"})
	app.Register("statements")
	crm.Register("statements")
	app.Set("statements", nil)
	crm.Set("statements", errors.New("database \"crm\" does not exist"))
	ok, why := s.Ready()
	if want := "statements (eu/db1:5432/crm)"; ok || len(why) != 1 || why[want] == "" {
		t.Fatalf("got ready=%v why=%v, want unready because of %s only", ok, why, want)
	}
	if got := testutil.ToFloat64(s.up.WithLabelValues("statements", "eu", "db1:5432", "app")); got != 1 {
		t.Errorf("pgtripwire_source_up of app: got %v, want 1", got)
	}
	crm.Forget("statements")
	if ok, why := s.Ready(); !ok {
		t.Errorf("got unready (%v) once crm's component was forgotten, want ready", why)
	}
}
