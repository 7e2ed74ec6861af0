package helm_test

import (
	"strings"
	"testing"
)

// TestChartRefuses: values that would make a detector that cannot start, a DSN in a
// ConfigMap or replicas that all page fail the render, with a message naming the value
// to set — not a pod in CrashLoopBackOff an hour later.
func TestChartRefuses(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"no DSN and no existing Secret",
			map[string]any{"secret": map[string]any{"dsn": ""}},
			"secret.dsn is required"},
		{"an existing Secret without its name",
			map[string]any{"secret": map[string]any{"create": false, "dsn": ""}},
			"secret.existingSecret is required with secret.create=false"},
		{"both a DSN and an existing Secret",
			map[string]any{"secret": map[string]any{"existingSecret": "pgtripwire-dsn"}},
			"set secret.create=false to use the existing Secret"},
		{"a DSN in the configuration",
			map[string]any{"config": map[string]any{"database": map[string]any{"dsn": testDSN}}},
			"config.database.dsn: a DSN must not be in the ConfigMap"},
		{"replicas without high availability",
			map[string]any{"config": map[string]any{"high_availability": map[string]any{"enabled": false}}},
			"replicaCount 2 needs config.high_availability.enabled: true"},
		{"nothing to watch",
			map[string]any{"config": map[string]any{"sensitive": []any{}}},
			"config.sensitive is required"},
		{"no image",
			map[string]any{"image": map[string]any{"tag": ""}},
			"image.repository and image.tag (or image.digest) are required"},
		{"a listener the probes cannot find",
			map[string]any{"config": map[string]any{"http": map[string]any{"listen": "127.0.0.1:0"}}},
			`config.http.listen "127.0.0.1:0": want host:port with a fixed port`},
		{"a disruption budget that blocks drains",
			map[string]any{"podDisruptionBudget": map[string]any{"minAvailable": 2}},
			"podDisruptionBudget.minAvailable 2 with replicaCount 2 would block every node drain"},
		{"a DSN with targets",
			map[string]any{"config": map[string]any{"sensitive": []any{}, "targets": []any{map[string]any{"cluster": "eu"}}}},
			"secret.dsn is set but config.targets names the servers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vals := values(t, "minimal.yaml")
			mergeValues(vals, tt.values)
			_, err := render(t, vals)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("render: got %v, want an error saying %q", err, tt.want)
			}
		})
	}
}
