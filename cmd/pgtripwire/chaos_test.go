package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/source/registry"
	"github.com/pgtripwire/pgtripwire/detector/source/statements"
	"github.com/pgtripwire/pgtripwire/detector/source/wal"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// chaosRules page once per episode: a bulk read by a role, a mass change of a table.
// Each action's role or table comes round again only after its episode has resolved, so
// every action is one episode: one firing line and one resolved line.
const chaosRules = `groups:
  - name: chaos
    rules:
      - name: ChaosRead
        description: A bulk read of sensitive columns.
        severity: critical
        match: event.source == "statements" && size(event.sensitive_read) > 0 && event.rows_read >= 1000
        aggregate: {function: count, window: 5s, by: [role]}
        condition:
          threshold: {op: ">=", value: 1}
      - name: ChaosChange
        description: A mass change of a sensitive table.
        severity: critical
        match: event.source == "wal" && event.operation == "UPDATE"
        aggregate: {function: sum, field: rows, window: 5s, by: [relation]}
        condition:
          threshold: {op: ">=", value: 1000}
`

// chaosKeys is how many roles and tables the workload goes round: a key comes round
// again every chaosKeys actions of its kind, long after its 5 s window has resolved.
const chaosKeys = 24

// #20 acceptance 3: kill -9 at random points of a mixed workload (bulk reads, mass
// changes): every read and every change paged exactly once, every firing alert
// resolved exactly once. PGTRIPWIRE_CHAOS sets how long the workload runs (default
// 45s; make chaos runs 10m, about 20 kills).
func TestChaosKillNineDuringAMixedWorkload(t *testing.T) {
	duration := 45 * time.Second
	if v := os.Getenv("PGTRIPWIRE_CHAOS"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("PGTRIPWIRE_CHAOS=%q: %v", v, err)
		}
		duration = d
	}
	// About 20 kills in 10 minutes (a gap of 12 to 37 s, and a restart, each), one every
	// 1.5 to 4.5 s in a short run.
	meanGap := max(3*time.Second, duration/24)

	bin := buildBinary(t)
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, username text, password_hash text);
		INSERT INTO public.users SELECT i, 'u' || i || '@example.com', 'u' || i, md5(i::text) FROM generate_series(1, 2000) i`)
	db.Exec(t, `CREATE ROLE chaos_readers`)
	db.Exec(t, `GRANT SELECT ON public.users TO chaos_readers`)
	var sensitive strings.Builder
	sensitive.WriteString("  - table: public.users\n    columns: [email, password_hash]\n")
	for i := range chaosKeys {
		db.CreateRole(t, fmt.Sprintf("chaos_r%d", i))
		db.Exec(t, fmt.Sprintf(`GRANT chaos_readers TO chaos_r%d`, i))
		db.Exec(t, fmt.Sprintf(`CREATE TABLE public.chg_%d (id int PRIMARY KEY, secret text);
			INSERT INTO public.chg_%[1]d SELECT i, md5(i::text) FROM generate_series(1, 1500) i`, i))
		fmt.Fprintf(&sensitive, "  - table: public.chg_%d\n    columns: [secret]\n", i)
	}

	dir := t.TempDir()
	rules := filepath.Join(dir, "chaos.yml")
	if err := os.WriteFile(rules, []byte(chaosRules), 0o600); err != nil {
		t.Fatal(err)
	}
	slot, listen := db.Name, freeAddr(t)
	sources := fmt.Sprintf("  wal:\n    enabled: true\n    slot: %s\n    publication: %s\n", slot, slot)
	for _, def := range registry.Sources {
		if def.Name != wal.Name && def.Name != statements.Name {
			sources += fmt.Sprintf("  %s:\n    enabled: false\n", def.Name)
		}
	}
	config := filepath.Join(dir, "pgtripwire.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`database:
  dsn: %q
sensitive:
%shttp:
  listen: %q
alerts:
  file: alerts.jsonl
  stdout: false
  resolve_after: 5s
rules:
  default_pack: false
  files: [%q]
state_dir: %q
sources:
%s`, db.SuperuserDSN(), sensitive.String(), listen, rules, filepath.Join(dir, "state"), sources)), 0o600); err != nil {
		t.Fatal(err)
	}
	alerts := filepath.Join(dir, "alerts.jsonl")

	p := startBinary(t, bin, config, listen) // creates the publication and the slot
	var mu sync.Mutex                        // guards p
	ctx, stop := context.WithTimeout(t.Context(), duration)
	defer stop()

	// The killer: kill -9 at random moments, start again at once.
	kills := 0
	var killedAt []string
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(meanGap/2 + rand.N(meanGap)):
			}
			mu.Lock()
			p.kill()
			kills++
			killedAt = append(killedAt, time.Now().Format("05.000"))
			p = startBinary(t, bin, config, listen)
			mu.Unlock()
		}
	}()

	// The workload: a bulk read by the next role, then a mass change of the next table.
	reads, changes := map[string]int{}, map[string]int{}
	at := map[string][]string{} // when each key's actions ran, for the failure message
	conn := db.Conn(t, "postgres")
	for i := 0; ctx.Err() == nil; i++ {
		role, table := fmt.Sprintf("chaos_r%d", i%chaosKeys), fmt.Sprintf("public.chg_%d", i%chaosKeys)
		if _, err := conn.Exec(t.Context(), fmt.Sprintf(`SET ROLE %s; SELECT email, password_hash FROM public.users; RESET ROLE`, role)); err != nil {
			t.Fatal(err)
		}
		reads[role]++
		at[role] = append(at[role], time.Now().Format("05.000"))
		if _, err := conn.Exec(t.Context(), fmt.Sprintf(`UPDATE %s SET secret = md5(secret)`, table)); err != nil {
			t.Fatal(err)
		}
		changes[table]++
		at[table] = append(at[table], time.Now().Format("05.000"))
		time.Sleep(time.Duration(300+rand.IntN(400)) * time.Millisecond)
	}
	<-killed
	t.Logf("%d bulk reads and %d mass changes over %s, %d kills", sum(reads), sum(changes), duration, kills)

	// Every episode paged and resolved, then nothing more.
	want := sum(reads) + sum(changes)
	mu.Lock()
	defer mu.Unlock()
	for deadline := time.Now().Add(60 * time.Second); len(linesIn(t, alerts, model.StateResolved)) < want; {
		if time.Now().After(deadline) {
			t.Errorf("%d resolved lines after 60s, want %d", len(linesIn(t, alerts, model.StateResolved)), want)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(6 * time.Second) // a late duplicate would be due by now
	for _, c := range []struct {
		rule, label string
		actions     map[string]int
	}{{"ChaosRead", "role", reads}, {"ChaosChange", "table", changes}} {
		for key, n := range c.actions {
			firing, resolved := 0, 0
			var lines []string
			for _, a := range linesIn(t, alerts, "") {
				if a.Rule != c.rule || a.Labels[c.label] != key {
					continue
				}
				if a.State == model.StateFiring {
					firing++
				} else {
					resolved++
				}
				lines = append(lines, string(a.State)+"@"+a.Time.Format("05.000"))
			}
			if firing != n || resolved != n {
				t.Errorf("%s %s=%s: %d actions (at %v), %d firing and %d resolved lines (%v), want %d of each; kills at %v",
					c.rule, c.label, key, n, at[key], firing, resolved, lines, n, killedAt)
			}
		}
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// linesIn returns the chaos rules' lines of the alert log in state ("": every line).
func linesIn(t *testing.T, path string, state model.State) []model.Alert {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []model.Alert
	for _, line := range bytes.Split(data, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var a model.Alert
		if err := json.Unmarshal(line, &a); err != nil {
			t.Fatalf("alert log line %q: %v", line, err)
		}
		if strings.HasPrefix(a.Rule, "Chaos") && (state == "" || a.State == state) {
			out = append(out, a)
		}
	}
	return out
}
