package log

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// syslogMessage is what the source keeps of one RFC 5424 message: who sent it and its
// MSG, PostgreSQL's text.
type syslogMessage struct {
	Host    string // HOSTNAME, "" for the nil value
	App     string // APP-NAME (syslog_ident: "postgres")
	ProcID  string // PROCID: the backend's pid when the server logs with LOG_PID
	Body    string
	Receipt time.Time
}

// parseSyslog reads one RFC 5424 message: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID
// MSGID STRUCTURED-DATA [MSG]. The timestamp is not kept (the log text has the
// server's own); a BOM before MSG is dropped.
func parseSyslog(b []byte) (syslogMessage, error) {
	var m syslogMessage
	if len(b) < 2 || b[0] != '<' {
		return m, errMalformed
	}
	end := bytes.IndexByte(b, '>')
	if end < 2 || end > 4 {
		return m, errMalformed
	}
	if pri, err := strconv.Atoi(string(b[1:end])); err != nil || pri > 191 {
		return m, errMalformed
	}
	rest := b[end+1:]
	var fields [6][]byte // VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID
	for i := range fields {
		sp := bytes.IndexByte(rest, ' ')
		if sp <= 0 {
			return m, errMalformed
		}
		fields[i], rest = rest[:sp], rest[sp+1:]
	}
	if string(fields[0]) != "1" {
		return m, errMalformed
	}
	nilOr := func(f []byte) string {
		if string(f) == "-" {
			return ""
		}
		return string(f)
	}
	m.Host, m.App, m.ProcID = nilOr(fields[2]), nilOr(fields[3]), nilOr(fields[4])
	// STRUCTURED-DATA: "-" or one or more [SD-ID param="value" …] with \" \\ \] escapes.
	switch {
	case len(rest) > 0 && rest[0] == '-':
		rest = rest[1:]
	case len(rest) > 0 && rest[0] == '[':
		for len(rest) > 0 && rest[0] == '[' {
			i, quoted := 1, false
			for ; i < len(rest); i++ {
				c := rest[i]
				if c == '\\' && quoted {
					i++
					continue
				}
				if c == '"' {
					quoted = !quoted
				}
				if c == ']' && !quoted {
					break
				}
			}
			if i >= len(rest) {
				return m, errMalformed
			}
			rest = rest[i+1:]
		}
	default:
		return m, errMalformed
	}
	if len(rest) > 0 {
		if rest[0] != ' ' {
			return m, errMalformed
		}
		rest = bytes.TrimPrefix(rest[1:], []byte("\xef\xbb\xbf"))
	}
	m.Body = string(bytes.TrimRight(rest, "\r\n"))
	return m, nil
}

// maxSyslogMessage bounds one message, in a datagram or a TCP frame. PostgreSQL splits
// its lines at 900 bytes; a forwarded jsonlog or csvlog line can be long.
const maxSyslogMessage = 1 << 20

// readFrames reads RFC 6587 frames from a TCP stream: octet-counted ("LEN SP MSG")
// when a frame starts with a digit, otherwise non-transparent (ended by LF), and hands
// each to fn. It returns at the end of the stream or on the first framing error.
func readFrames(r io.Reader, fn func([]byte)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		c, err := br.Peek(1)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if '0' <= c[0] && c[0] <= '9' {
			n := 0
			for {
				d, err := br.ReadByte()
				if err != nil {
					return fmt.Errorf("octet count: %w", err)
				}
				if d == ' ' {
					break
				}
				if d < '0' || d > '9' || n > maxSyslogMessage {
					return errors.New("octet count: not a number, or over 1 MiB")
				}
				n = n*10 + int(d-'0')
			}
			msg := make([]byte, n)
			if _, err := io.ReadFull(br, msg); err != nil {
				return fmt.Errorf("octet-counted frame: %w", err)
			}
			fn(msg)
			continue
		}
		line, err := readLine(br)
		if len(line) > 0 {
			fn(line)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// readLine reads up to LF, refusing lines over maxSyslogMessage.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		part, err := br.ReadSlice('\n')
		line = append(line, part...)
		if len(line) > maxSyslogMessage {
			return nil, errors.New("syslog line over 1 MiB")
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return bytes.TrimRight(line, "\r\n"), err
		}
	}
}

// syslogReceiver listens on one address, UDP and TCP, and sends every message it
// parses to out; one it cannot parse is counted.
type syslogReceiver struct {
	udp *net.UDPConn
	tcp net.Listener
	out chan<- syslogMessage
	m   *metrics
	now func() time.Time
}

// listenSyslog binds addr for UDP and TCP.
func listenSyslog(ctx context.Context, addr string, out chan<- syslogMessage, m *metrics, now func() time.Time) (*syslogReceiver, error) {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("syslog: listen udp %s: %w", addr, err)
	}
	// TCP on the port UDP got (addr may ask for port 0).
	tcpAddr := pc.LocalAddr().String()
	l, err := lc.Listen(ctx, "tcp", tcpAddr)
	if err != nil {
		_ = pc.Close()
		return nil, fmt.Errorf("syslog: listen tcp %s: %w", tcpAddr, err)
	}
	return &syslogReceiver{udp: pc.(*net.UDPConn), tcp: l, out: out, m: m, now: now}, nil
}

// Addr is the address both listeners are bound to.
func (s *syslogReceiver) Addr() string { return s.udp.LocalAddr().String() }

// run receives until ctx is done, then closes the listeners and every connection and
// returns once all its goroutines have.
func (s *syslogReceiver) run(ctx context.Context) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, _, err := s.udp.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			s.handle(ctx, buf[:n], "udp")
		}
	})
	wg.Go(func() {
		for {
			c, err := s.tcp.Accept()
			if err != nil {
				return // closed
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					_ = c.Close()
				}()
				if err := readFrames(c, func(b []byte) { s.handle(ctx, b, "tcp") }); err != nil {
					s.m.syslogMalformed.WithLabelValues("tcp").Inc()
				}
			})
		}
	})
	<-ctx.Done()
	_ = s.udp.Close()
	_ = s.tcp.Close()
	mu.Lock()
	for c := range conns {
		_ = c.Close()
	}
	mu.Unlock()
	wg.Wait()
}

func (s *syslogReceiver) handle(ctx context.Context, b []byte, transport string) {
	s.m.syslogMessages.WithLabelValues(transport).Inc()
	msg, err := parseSyslog(b)
	if err != nil {
		s.m.syslogMalformed.WithLabelValues(transport).Inc()
		return
	}
	msg.Receipt = s.now()
	select {
	case s.out <- msg:
	case <-ctx.Done():
	}
}
