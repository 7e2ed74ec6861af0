package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/model"
)

const newRoleRule = `      - name: NewRole
        description: d
        severity: info
        match: 'event.source == "activity"'
        condition:
          first_seen: {key: [role], learn_for: 1m}
`

func in(cluster string, ev model.Event) model.Event {
	ev.Cluster, ev.Instance = cluster, cluster+"-db:5432"
	return ev
}

// A detector that takes a cluster over resumes its windows where the one
// before left them, knows its first-seen keys, and keeps its firing alerts
// without a second firing transition; the clusters it does not watch are not
// touched, and Release forgets a cluster's groups without a transition.
func TestPartitionTakeRelease(t *testing.T) {
	rules := sweepRule + newRoleRule
	a := newHarness(t, rules, Options{})
	a.eval(0, in("eu", model.Event{Source: "activity", Role: "known"}))
	a.tickTo(time.Second, 2*time.Minute) // NewRole has learned "known"
	for i := range 12 {                  // 6,000 rows of eu's sweep
		a.eval(2*time.Minute+time.Duration(i)*time.Second, in("eu", page("intruder", 500)))
	}
	for i := range 20 { // 10,000 rows in us: firing
		a.eval(2*time.Minute+time.Duration(i)*time.Second, in("us", page("thief", 500)))
	}
	checkTransitions(t, a.got,
		"firing Sweep @2m19s {cluster=us,columns=email,password_hash,database=app,instance=us-db:5432,role=thief,source=statements,table=public.users} 10000")

	eu, err := a.e.Partition("eu")
	if err != nil {
		t.Fatal(err)
	}
	us, err := a.e.Partition("us")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(eu), "us-db") {
		t.Errorf("eu's partition holds a group of us: %s", eu)
	}

	b := newHarness(t, rules, Options{})
	b.eval(0, in("asia", page("local", 100))) // b's own cluster
	for _, p := range [][]byte{eu, us} {
		if _, err := b.e.Take(p); err != nil {
			t.Fatalf("Take: %v", err)
		}
	}
	at := 2*time.Minute + 30*time.Second
	// The sweep goes on in b: 4,000 more rows cross 10,000 with the 6,000 of a.
	for i := range 8 {
		b.eval(at+time.Duration(i)*time.Second, in("eu", page("intruder", 500)))
	}
	// A known role is not new; us's firing alert is not fired again.
	b.eval(at+10*time.Second, in("eu", model.Event{Source: "activity", Role: "known"}))
	b.eval(at+10*time.Second, in("us", page("thief", 500)))
	checkTransitions(t, b.got,
		"firing Sweep @2m37s {cluster=eu,columns=email,password_hash,database=app,instance=eu-db:5432,role=intruder,source=statements,table=public.users} 10000")

	// A role new to both is new.
	b.eval(at+10*time.Second, in("eu", model.Event{Source: "activity", Role: "stranger"}))
	checkTransitions(t, b.got[1:], "firing NewRole @2m40s {cluster=eu,instance=eu-db:5432,role=stranger,source=activity} 0")
	b.got = b.got[:1]

	// Released, us's alert goes quiet in b without a transition; asia's group stays.
	b.e.Release("us")
	asia, err := b.e.Partition("asia")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(asia), "local") {
		t.Errorf("asia's group was dropped by Take or Release(us): %s", asia)
	}
	for _, a := range b.tickTo(at+11*time.Second, at+20*time.Minute) {
		if a.Labels[model.LabelCluster] != "eu" {
			t.Errorf("after Release(us): transition %q, want eu's resolutions only", summary(a))
		}
	}
}

// A partition that does not decode, or holds a group of another cluster,
// changes nothing.
func TestTakeRefusesABadPartition(t *testing.T) {
	a := newHarness(t, sweepRule, Options{})
	a.eval(0, in("eu", page("intruder", 9500)))
	good, err := a.e.Partition("eu")
	if err != nil {
		t.Fatal(err)
	}
	b := newHarness(t, sweepRule, Options{})
	b.eval(0, in("eu", page("intruder", 400)))
	for name, data := range map[string]string{
		"not JSON":         "{",
		"another version":  strings.Replace(string(good), `"version":1`, `"version":99`, 1),
		"another cluster":  strings.Replace(string(good), `"cluster":"eu"`, `"cluster":"us"`, 1),
		"a window too far": strings.Replace(string(good), `"buckets":{"`, `"buckets":{"999999":1,"`, 1),
	} {
		if _, err := b.e.Take([]byte(data)); err == nil {
			t.Errorf("%s: Take succeeded", name)
		}
	}
	// b's own 400 rows are still there: 9,600 more fire at 10,000.
	b.eval(time.Second, in("eu", page("intruder", 9600)))
	if len(b.got) != 1 || b.got[0].Value != 10000 {
		t.Errorf("transitions %q, want one firing at 10000", summaries(b.got))
	}
}
