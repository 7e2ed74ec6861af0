// Package deploy_test checks the deployment files against the real parts they configure:
// docker-compose.yml through the compose-spec loader (no Docker engine runs here), and
// the compose stack's PostgreSQL init scripts and pgtripwire config by running them
// locally: the init SQL on a real PostgreSQL, the detector as the least-privileged role
// it creates, and a bulk read that must page.
package deploy_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/internal/testkit/amtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"../docker-compose.yml"},
		cli.WithWorkingDirectory(".."), cli.WithName("pgtripwire"))
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return project
}

func TestComposeFileIsValid(t *testing.T) {
	project := loadCompose(t)
	for _, name := range []string{"postgres", "pgtripwire", "prometheus", "alertmanager"} {
		if _, err := project.GetService(name); err != nil {
			t.Errorf("service %s: %v", name, err)
		}
	}
	for _, name := range []string{"grafana"} {
		if _, err := project.GetService(name); err != nil {
			t.Errorf("service %s: %v", name, err)
		}
	}
	if _, err := project.WithProfiles([]string{"attack"}); err != nil {
		t.Errorf("profile attack: %v", err)
	}
	pg, _ := project.GetService("postgres")
	for _, setting := range []string{"wal_level=logical", "shared_preload_libraries=pg_stat_statements", "compute_query_id=on"} {
		if !slices.Contains(pg.Command, setting) {
			t.Errorf("postgres command %v lacks %s", pg.Command, setting)
		}
	}
	if pg.HealthCheck == nil {
		t.Error("postgres has no healthcheck; pgtripwire's depends_on needs one")
	}
	det, _ := project.GetService("pgtripwire")
	if dep, ok := det.DependsOn["postgres"]; !ok || dep.Condition != types.ServiceConditionHealthy {
		t.Errorf("pgtripwire depends_on postgres: got %+v, want condition service_healthy", det.DependsOn)
	}
	if det.Build == nil {
		t.Error("pgtripwire is not built from the repository's Dockerfile")
	} else if _, err := os.Stat(filepath.Join(det.Build.Context, "Dockerfile")); err != nil {
		t.Errorf("build context: %v", err)
	}
	// Every bind-mounted file or directory is in the repository.
	for _, svc := range project.Services {
		for _, v := range svc.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("service %s mounts %s: %v", svc.Name, v.Source, err)
			}
		}
	}
	// Every service has a healthcheck, or says in a comment why it has none, so that
	// depends_on conditions make `docker compose up` settle in order.
	reasons := serviceComments(t)
	for _, svc := range project.AllServices() {
		if svc.HealthCheck == nil && !strings.Contains(reasons[svc.Name], "No healthcheck:") {
			t.Errorf("service %s has no healthcheck and no comment saying why (\"No healthcheck: …\")", svc.Name)
		}
	}
	if _, err := config.Load("pgtripwire/pgtripwire.yaml", func(string) string { return "" }); err != nil {
		t.Errorf("deploy/pgtripwire/pgtripwire.yaml: %v", err)
	}
}

// TestComposeStackPagesOnADump runs what compose would start, as local processes: the
// init scripts on a real PostgreSQL, pgtripwire with the compose config connecting as
// the pgtripwire role they create (pg_monitor, no table rights), and mallory's dump.
func TestComposeStackPagesOnADump(t *testing.T) {
	// The init scripts create roles, as they do once on a fresh compose volume: a
	// cluster of their own, so that they run as written, any number of times.
	db := pgtest.NewDatabaseIn(t, pgtest.NewServer(t, nil))
	scripts, err := filepath.Glob("postgres/init/*.sql")
	if err != nil || len(scripts) == 0 {
		t.Fatalf("init scripts: %v %v", scripts, err)
	}
	for _, path := range scripts {
		sql, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		db.Exec(t, string(sql))
	}

	env := map[string]string{config.EnvDSN: db.DSN("pgtripwire")}
	cfg, err := config.Load("pgtripwire/pgtripwire.yaml", func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Alerts.Alertmanager.URLs; len(got) != 1 || got[0] != "http://alertmanager:9093" {
		t.Fatalf("the compose config sends alerts to %v, want the compose Alertmanager", got)
	}
	am := amtest.Start(t) // stands in for the compose service
	cfg.Alerts.Alertmanager.URLs = []string{am.URL}
	detectortest.Local(t, cfg)
	r := detectortest.Start(t, cfg)

	mallory := db.Conn(t, "mallory")
	rows, err := mallory.Query(t.Context(), `SELECT email, username, password_hash FROM users`)
	if err != nil {
		t.Fatal(err)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	got := r.WaitFiring(t, 5*time.Second)
	if got.Labels["role"] != "mallory" || got.Value != 100000 ||
		!strings.Contains(got.Labels["columns"], "password_hash") {
		t.Fatalf("got %+v, want mallory's 100000-row read of the credential columns", got)
	}
	eventually(t, 10*time.Second, "the alert in Alertmanager", func() bool {
		_, ok := am.Find(t, map[string]string{"alertname": "SensitiveBulkRead", "role": "mallory"})
		return ok
	})
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serviceComments returns, per service of docker-compose.yml, the comments written on
// or inside its entry; the compose loader drops comments, so this reads the YAML itself.
func serviceComments(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	comments := map[string]string{}
	var collect func(n *yaml.Node, b *strings.Builder)
	collect = func(n *yaml.Node, b *strings.Builder) {
		b.WriteString(n.HeadComment + n.LineComment + n.FootComment)
		for _, c := range n.Content {
			collect(c, b)
		}
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "services" {
			continue
		}
		services := root.Content[i+1]
		for j := 0; j+1 < len(services.Content); j += 2 {
			var b strings.Builder
			collect(services.Content[j], &b)
			collect(services.Content[j+1], &b)
			comments[services.Content[j].Value] = b.String()
		}
	}
	return comments
}
