package replication

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/source"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// Walsenders as the server shows them to a role with pg_read_all_stats.
var (
	// pg_basebackup's two connections: BASE_BACKUP, then the WAL stream on a
	// temporary physical slot, from the same client.
	baseBackup = walsender{pid: 101, started: t0, role: "mallory", application: "pg_basebackup",
		addr: "203.0.113.7", visible: true, state: "backup", backup: true}
	baseBackupStream = walsender{pid: 102, started: t0.Add(time.Second), role: "mallory", application: "pg_basebackup",
		addr: "203.0.113.7", visible: true, state: "streaming", slot: "pg_basebackup_102", slotType: "physical"}
	// A physical replication connection that has not sent a command yet.
	connecting = walsender{pid: 101, started: t0, role: "mallory", application: "pg_basebackup",
		addr: "203.0.113.7", visible: true, state: "startup"}
	standby = walsender{pid: 103, started: t0, role: "replicator", application: "standby1",
		addr: "10.0.3.4", visible: true, state: "streaming"}
	recvlogical = walsender{pid: 104, started: t0, role: "mallory", application: "pg_recvlogical",
		addr: "local", visible: true, state: "streaming", database: "app", slot: "exfil", slotType: "logical", slotDatabase: "app"}
	// The WAL source connecting (identify, create the slot), then streaming.
	ownConnecting = walsender{pid: 105, started: t0, role: "pgtripwire", application: "pgtripwire",
		addr: "10.0.0.2", visible: true, state: "startup", database: "app"}
	ownStreaming = walsender{pid: 105, started: t0, role: "pgtripwire", application: "pgtripwire",
		addr: "10.0.0.2", visible: true, state: "streaming", database: "app", slot: "pgtripwire", slotType: "logical", slotDatabase: "app"}
)

// with returns w changed by f.
func with(w walsender, f func(*walsender)) walsender {
	f(&w)
	return w
}

// hidden is w as a role without pg_read_all_stats sees it.
func hidden(w walsender) walsender {
	w.started, w.addr, w.visible, w.state = time.Time{}, "", false, ""
	return w
}

// report renders what a poll judged unexpected: "pid:operation", sorted.
func report(js []judged) string {
	var out []string
	for _, j := range js {
		if j.verdict == verdictUnexpected {
			out = append(out, fmt.Sprintf("%d:%s", j.w.pid, j.operation))
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func TestJudge(t *testing.T) {
	ownConfig := Config{OwnUser: "pgtripwire", OwnApplication: "pgtripwire", OwnSlot: "pgtripwire"}
	allow := func(cs ...source.ReplicationClient) Config {
		c := ownConfig
		c.Allowed = cs
		return c
	}
	tests := []struct {
		name  string
		cfg   Config
		polls [][]walsender
		// want is what each poll reports unexpected ("pid:operation …").
		want []string
	}{
		{
			name:  "pg_basebackup is one backup, its WAL stream folded into it, each reported once",
			cfg:   ownConfig,
			polls: [][]walsender{{baseBackup}, {baseBackup, baseBackupStream}, {baseBackup, baseBackupStream}, {}},
			want:  []string{"101:backup", "102:backup", "", ""},
		},
		{
			name:  "caught before BASE_BACKUP, it waits a poll and is reported as the backup it is",
			cfg:   ownConfig,
			polls: [][]walsender{{connecting}, {baseBackup}, {baseBackup}},
			want:  []string{"", "101:backup", ""},
		},
		{
			name:  "gone before it showed what it does: reported by the kind of connection it was",
			cfg:   ownConfig,
			polls: [][]walsender{{connecting}, {}},
			want:  []string{"", "101:physical"},
		},
		{
			name:  "a database replication connection idle for a poll is a logical one",
			cfg:   ownConfig,
			polls: [][]walsender{{with(connecting, func(w *walsender) { w.database = "app" })}, {with(connecting, func(w *walsender) { w.database = "app" })}},
			want:  []string{"", "101:logical"},
		},
		{
			name:  "a standby streaming without a slot is physical",
			cfg:   ownConfig,
			polls: [][]walsender{{standby}},
			want:  []string{"103:physical"},
		},
		{
			name:  "pg_recvlogical on another slot of the monitored database",
			cfg:   ownConfig,
			polls: [][]walsender{{recvlogical}},
			want:  []string{"104:logical"},
		},
		{
			name: "a logical stream of another database is that database's detector's",
			cfg:  ownConfig,
			polls: [][]walsender{{with(recvlogical, func(w *walsender) { w.database, w.slotDatabase = "other", "other" })},
				{with(ownConnecting, func(w *walsender) { w.database = "other" })},
				{with(ownConnecting, func(w *walsender) { w.database = "other" })}},
			want: []string{"", "", ""},
		},
		{
			name:  "a base backup over a database connection of another database is still a copy of everything",
			cfg:   ownConfig,
			polls: [][]walsender{{with(baseBackup, func(w *walsender) { w.database = "other" })}},
			want:  []string{"101:backup"},
		},
		{
			name:  "the WAL source, however long it takes to create its slot",
			cfg:   ownConfig,
			polls: [][]walsender{{ownConnecting}, {ownConnecting}, {ownConnecting}, {ownStreaming}, {ownStreaming}},
			want:  []string{"", "", "", "", ""},
		},
		{
			name:  "the WAL source leaving before it held its slot",
			cfg:   ownConfig,
			polls: [][]walsender{{ownConnecting}, {}},
			want:  []string{"", ""},
		},
		{
			name:  "the detector's role and application on another slot",
			cfg:   ownConfig,
			polls: [][]walsender{{ownConnecting}, {with(ownStreaming, func(w *walsender) { w.slot = "exfil" })}},
			want:  []string{"", "105:logical"},
		},
		{
			name:  "the WAL source's walsender moving to another slot",
			cfg:   ownConfig,
			polls: [][]walsender{{ownStreaming}, {with(ownStreaming, func(w *walsender) { w.slot = "exfil" })}},
			want:  []string{"", "105:logical"},
		},
		{
			name:  "our slot read by another role",
			cfg:   ownConfig,
			polls: [][]walsender{{with(ownStreaming, func(w *walsender) { w.role = "mallory" })}},
			want:  []string{"105:logical"},
		},
		{
			name:  "without the WAL source, the detector's role connecting is judged like anyone",
			cfg:   Config{OwnUser: "pgtripwire", OwnApplication: "pgtripwire"},
			polls: [][]walsender{{ownConnecting}, {ownConnecting}},
			want:  []string{"", "105:logical"},
		},
		{
			name: "allowed by role and network, by application, by Unix socket",
			cfg: allow(
				source.ReplicationClient{Role: "replicator", Network: netip.MustParsePrefix("10.0.3.0/24")},
				source.ReplicationClient{Role: "mallory", Application: "pg_basebackup"},
				source.ReplicationClient{Local: true}),
			polls: [][]walsender{{standby, baseBackup, baseBackupStream, recvlogical}},
			want:  []string{""},
		},
		{
			name:  "an entry matches every field it names",
			cfg:   allow(source.ReplicationClient{Role: "replicator", Network: netip.MustParsePrefix("10.0.4.0/24")}),
			polls: [][]walsender{{standby}},
			want:  []string{"103:physical"},
		},
		{
			name: "a client the role cannot see never matches an entry naming a network or local",
			cfg: allow(source.ReplicationClient{Role: "replicator", Network: netip.MustParsePrefix("10.0.3.0/24")},
				source.ReplicationClient{Local: true}),
			polls: [][]walsender{{hidden(standby)}, {hidden(standby)}},
			want:  []string{"", "103:physical"},
		},
		{
			name:  "a hidden walsender is judged on role and application",
			cfg:   allow(source.ReplicationClient{Role: "replicator"}),
			polls: [][]walsender{{hidden(standby)}, {hidden(standby)}, {hidden(standby)}},
			want:  []string{"", "", ""},
		},
		{
			name:  "a hidden base backup and logical stream are told by what every role sees",
			cfg:   ownConfig,
			polls: [][]walsender{{hidden(baseBackup), hidden(recvlogical)}},
			want:  []string{"101:backup 104:logical"},
		},
		{
			name:  "a pid reused by a new walsender is a new one",
			cfg:   ownConfig,
			polls: [][]walsender{{standby}, {standby}, {with(standby, func(w *walsender) { w.started = t0.Add(time.Minute) })}},
			want:  []string{"103:physical", "", "103:physical"},
		},
		{
			name:  "a pending walsender whose pid a new one took before the next poll is still reported",
			cfg:   ownConfig,
			polls: [][]walsender{{connecting}, {with(connecting, func(w *walsender) { w.started = t0.Add(time.Second) })}},
			want:  []string{"", "101:physical"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := &judge{cfg: tt.cfg, database: "app", seen: map[int32]tracked{}}
			for i, senders := range tt.polls {
				js, next := j.poll(senders)
				if got := report(js); got != tt.want[i] {
					t.Errorf("poll %d: got %q, want %q", i+1, got, tt.want[i])
				}
				j.seen = next
			}
		})
	}
}

// Until the sink accepts a poll's events, nothing is learnt: the same walsenders are
// judged again, and reported again, at the next poll.
func TestJudgeLearnsNothingUntilCommitted(t *testing.T) {
	j := &judge{database: "app", seen: map[int32]tracked{}}
	for i := range 2 {
		if got, _ := j.poll([]walsender{baseBackup}); report(got) != "101:backup" {
			t.Fatalf("poll %d: got %q, want 101:backup", i+1, report(got))
		}
	}
	j.seen = map[int32]tracked{}
	if _, next := j.poll([]walsender{connecting}); len(next) != 1 {
		t.Fatalf("got %d walsenders tracked, want the pending one", len(next))
	} else {
		j.seen = next
	}
	// Gone, and its report refused: the pending walsender is still owed a report.
	for i := range 2 {
		if got, _ := j.poll(nil); report(got) != "101:physical" {
			t.Fatalf("after it left, poll %d: got %q, want 101:physical", i+1, report(got))
		}
	}
}

func TestEvent(t *testing.T) {
	now := t0.Add(time.Hour)
	for _, tt := range []struct {
		name string
		j    judged
		want string
	}{
		{"backup", judged{w: baseBackup, operation: OpBackup},
			"replication walsender_unexpected backup role=mallory addr=203.0.113.7 app=pg_basebackup pid=101 object= db= complete=true"},
		{"stream of a backup", judged{w: baseBackupStream, operation: OpBackup},
			"replication walsender_unexpected backup role=mallory addr=203.0.113.7 app=pg_basebackup pid=102 object=pg_basebackup_102 db= complete=true"},
		{"logical", judged{w: recvlogical, operation: OpLogical},
			"replication walsender_unexpected logical role=mallory addr=local app=pg_recvlogical pid=104 object=exfil db=app complete=true"},
		{"hidden", judged{w: hidden(standby), operation: OpPhysical},
			"replication walsender_unexpected physical role=replicator addr= app=standby1 pid=103 object= db= complete=false"},
	} {
		ev := tt.j.event(now)
		got := fmt.Sprintf("%s %s %s role=%s addr=%s app=%s pid=%d object=%s db=%s complete=%v", ev.Source, ev.Kind,
			ev.Operation, ev.Role, ev.ClientAddr, ev.Application, ev.PID, ev.Object, ev.Database, ev.Complete)
		if got != tt.want || !ev.Time.Equal(now) {
			t.Errorf("%s: got %s at %s, want %s at %s", tt.name, got, ev.Time, tt.want, now)
		}
	}
}
