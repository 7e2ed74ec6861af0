package log

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
)

// The receiver on real sockets: PostgreSQL's syslog output (one entry split into
// messages) over UDP, and over TCP with both framings, becomes events; a refusing sink
// gets the same events again.
func TestSyslogReceiver(t *testing.T) {
	rec := &sourcetest.Recorder{Refuse: 1}
	reg := prometheus.NewRegistry()
	h := health.New(reg)
	h.Register(Name)
	src := New(Config{SyslogListen: "127.0.0.1:0", Sensitive: map[string][]string{"public.users": {"email"}},
		ReconnectInitial: 10 * time.Millisecond, ReconnectMax: 20 * time.Millisecond}, rec, h, zaptest.NewLogger(t), reg)
	src.assembler.wait = 50 * time.Millisecond
	src.cfg.Poll = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	addr, err := src.SyslogAddr(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	msg := func(pid, seq int, body string) string {
		return fmt.Sprintf("<11>1 2024-05-01T10:00:00Z db1 postgres %d - - [%d-1] %s", pid, seq, body)
	}
	udp, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	for _, m := range []string{
		msg(10, 1, `FATAL:  password authentication failed for user "mallory"`),
		"<11>1 2024-05-01T10:00:00Z db1 postgres 10 - - [1-2] DETAIL:  Connection matched pg_hba.conf line 1",
	} {
		if _, err := udp.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	tcp, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	octet := msg(11, 1, `ERROR:  syntax error at or near "SELEC" at character 1`)
	lf := "<11>1 2024-05-01T10:00:00Z db1 postgres 11 - - [1-2] STATEMENT:  SELEC email FROM users\n"
	if _, err := fmt.Fprintf(tcp, "%d %s%s", len(octet), octet, lf); err != nil {
		t.Fatal(err)
	}
	sourcetest.Eventually(t, 10*time.Second, "two events", func() bool { return len(rec.Events()) >= 2 })
	auth, syntax := rec.Find(ofKind(KindAuthFailed)), rec.Find(ofKind(KindSyntaxError))
	if len(auth) != 1 || auth[0].Role != "mallory" || auth[0].Object != "28P01" || auth[0].PID != 10 {
		t.Errorf("auth_failed: %+v", auth)
	}
	if len(syntax) != 1 || syntax[0].Object != "42601" || syntax[0].Statement != "SELEC email FROM users" || syntax[0].Complete {
		t.Errorf("syntax_error: %+v", syntax)
	}
	if rec.Refused() != 1 {
		t.Errorf("refused %d hand-overs, want 1 (then the same events again)", rec.Refused())
	}
}
