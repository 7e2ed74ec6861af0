package log

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
)

// writeBacklog writes a jsonlog file of about size bytes as a busy server under
// attack writes it: three quarters LOG lines (connections, checkpoints, durations),
// a quarter errors — failed logins, and failed statements on the sensitive table whose
// literals differ line by line (an error-based extraction), each with its statement.
func writeBacklog(tb testing.TB, path string, size int64) int64 {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var n int64
	for i := 0; n < size; i++ {
		ts := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond).Format("2006-01-02 15:04:05.000")
		var line string
		switch i % 8 {
		case 0:
			line = fmt.Sprintf(`{"timestamp":"%s UTC","user":"app","dbname":"app","pid":%d,"remote_host":"10.0.0.%d","remote_port":5%04d,"session_id":"6630f3a0.%x","line_num":%d,"ps":"SELECT","session_start":"2024-05-01 10:00:00 UTC","vxid":"4/%d","txid":0,"error_severity":"ERROR","state_code":"22P02","message":"invalid input syntax for type integer: \"user%d@example.com\"","statement":"SELECT id, CAST(email AS int) FROM users WHERE id = %d AND plan = 'free'","cursor_position":12,"application_name":"web","backend_type":"client backend","query_id":0}`,
				ts, 1000+i%500, i%250, i%10000, i, i, i, i, i)
		case 1:
			line = fmt.Sprintf(`{"timestamp":"%s UTC","user":"user%d","dbname":"app","pid":%d,"remote_host":"10.0.1.%d","remote_port":4%04d,"session_id":"6630f3a0.%x","line_num":1,"ps":"authentication","session_start":"2024-05-01 10:00:00 UTC","vxid":"3/%d","txid":0,"error_severity":"FATAL","state_code":"28P01","message":"password authentication failed for user \"user%d\"","detail":"Connection matched pg_hba.conf line 99: \"host all all 0.0.0.0/0 scram-sha-256\"","backend_type":"client backend","query_id":0}`,
				ts, i%40, 2000+i%500, i%250, i%10000, i, i, i%40)
		case 2, 3:
			line = fmt.Sprintf(`{"timestamp":"%s UTC","user":"app","dbname":"app","pid":%d,"remote_host":"10.0.0.%d","remote_port":5%04d,"session_id":"6630f3a0.%x","line_num":1,"ps":"idle","session_start":"2024-05-01 10:00:00 UTC","vxid":"","txid":0,"error_severity":"LOG","message":"duration: %d.%03d ms  statement: SELECT id, plan FROM accounts WHERE id = %d","application_name":"web","backend_type":"client backend","query_id":-4201968238419034542}`,
				ts, 1000+i%500, i%250, i%10000, i, i%90, i%1000, i)
		case 4, 5:
			line = fmt.Sprintf(`{"timestamp":"%s UTC","user":"app","dbname":"app","pid":%d,"remote_host":"10.0.0.%d","remote_port":5%04d,"session_id":"6630f3a0.%x","line_num":1,"ps":"startup","session_start":"2024-05-01 10:00:00 UTC","vxid":"","txid":0,"error_severity":"LOG","message":"connection authorized: user=app database=app application_name=web","backend_type":"client backend","query_id":0}`,
				ts, 1000+i%500, i%250, i%10000, i)
		default:
			line = fmt.Sprintf(`{"timestamp":"%s UTC","pid":%d,"session_id":"6630f3a0.%x","line_num":%d,"session_start":"2024-05-01 10:00:00 UTC","txid":0,"error_severity":"LOG","message":"checkpoint complete: wrote %d buffers (0.1%%); 0 WAL file(s) added, 0 removed, 1 recycled; write=0.101 s, sync=0.002 s, total=0.112 s; sync files=9, longest=0.001 s, average=0.001 s; distance=%d kB, estimate=%d kB","backend_type":"checkpointer","query_id":0}`,
				ts, 60, i, i, i%900, i%40000, i%50000)
		}
		k, _ := w.WriteString(line + "\n")
		n += int64(k)
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return n
}

// BenchmarkBacklog reads a 100 MB jsonlog backlog through the whole source — framing,
// parsing, events, redaction of the failed statements, classification against a
// catalog snapshot, hand-over to a sink — and reports MB/s (#16 acceptance 3: at least
// 50). `make bench-log` runs it.
func BenchmarkBacklog(b *testing.B) {
	dir := b.TempDir()
	size := writeBacklog(b, filepath.Join(dir, "postgresql-2024-05-01_100000.json"), 100<<20)
	sensitive := map[string][]string{"public.users": {"email", "password_hash"}}
	cat, err := catalog.New([]catalog.Relation{{Schema: "public", Name: "users", Kind: catalog.Table,
		Columns: []string{"id", "email", "password_hash", "plan"}}}, sensitive)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	var events int
	for range b.N {
		rec := &sourcetest.Recorder{}
		s := New(Config{Directory: dir, Sensitive: sensitive, SearchPath: []string{"public"}}, rec,
			health.New(prometheus.NewRegistry()), zap.NewNop(), prometheus.NewRegistry())
		s.classify.cat, s.classify.catAt = cat, time.Now()
		t, err := newTailer(dir, FormatJSON, "", s.log, s.m)
		if err != nil {
			b.Fatal(err)
		}
		t.started = true // a file that appears after the start is read from its beginning
		s.tail = t
		if err := s.drainFiles(context.Background()); err != nil {
			b.Fatal(err)
		}
		events = len(rec.Events())
	}
	b.StopTimer()
	b.ReportMetric(float64(events), "events/op")
}
