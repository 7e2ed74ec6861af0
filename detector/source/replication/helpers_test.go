package replication_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/internal/pgserver"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// client is a PostgreSQL client program (pg_basebackup, pg_recvlogical) running until
// the test ends.
type client struct {
	name string
	done chan struct{}
	mu   sync.Mutex
	out  bytes.Buffer
	err  error
}

func (c *client) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

// String says how the program fared so far, for a failure message.
func (c *client) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.done:
		return c.name + " exited (" + errString(c.err) + "): " + c.out.String()
	default:
		return c.name + " running: " + c.out.String()
	}
}

func errString(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

// run starts program name of srv's installation with args, without the caller's PG*
// variables, in a process group of its own; the group is killed when the test ends
// (pg_basebackup streams WAL from a forked child).
func run(t *testing.T, srv *pgserver.Server, name string, args ...string) *client {
	t.Helper()
	c := &client{name: name, done: make(chan struct{})}
	cmd := exec.Command(pgtest.Program(t, srv, name), args...)
	cmd.Stdout, cmd.Stderr = c, c
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		err := cmd.Wait()
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
		if t.Failed() {
			t.Log(c)
		}
	})
	return c
}

// baseBackup runs pg_basebackup as role over TCP into a temporary directory, slowed to
// 32 kB/s (its minimum) so that it lasts: a base backup of a real database takes
// minutes, one of a test cluster a fraction of a second, which one poll may miss
// (docs/sources.md).
func baseBackup(t *testing.T, srv *pgserver.Server, role string) *client {
	t.Helper()
	return run(t, srv, "pg_basebackup", "--dbname", srv.DSN(role, "postgres"),
		"--pgdata", filepath.Join(t.TempDir(), "copy"), "--max-rate", "32k", "--checkpoint", "fast", "--no-sync")
}

// recvLogical creates a logical slot of db and streams it with pg_recvlogical as role
// over the server's Unix socket.
func recvLogical(t *testing.T, db *pgtest.Database, role, slot string) *client {
	t.Helper()
	db.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, slot)
	var sockets string
	if err := db.Conn(t, "postgres").QueryRow(t.Context(), `SHOW unix_socket_directories`).Scan(&sockets); err != nil {
		t.Fatal(err)
	}
	socket, _, _ := strings.Cut(sockets, ",")
	return run(t, db.Server, "pg_recvlogical", "--host", strings.TrimSpace(socket), "--port", strconv.Itoa(db.Server.Port()),
		"--username", role, "--dbname", db.Name, "--slot", slot, "--start", "--file", "-")
}
