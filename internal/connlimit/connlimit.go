// Package connlimit bounds the connections a listener holds open: in all,
// and per source address. A connection over either cap is closed as soon
// as it is accepted, before any TLS handshake, so that one client cannot
// hold the file descriptors and memory every other device needs.
//
// A source address is an IPv4 address, or an IPv6 /64: one IPv6 host
// usually owns a whole /64.
package connlimit

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Refusal reasons, for metrics and logs.
const (
	ReasonListener = "listener" // the listener holds its most connections
	ReasonSource   = "source"   // the source address holds its most connections
)

// Limits are the caps of one listener; zero means no cap.
type Limits struct {
	Max       int // connections open at once
	PerSource int // connections open at once from one source address
}

// Hooks report what a Listener does; nil hooks are skipped.
type Hooks struct {
	Refused func(reason string) // a connection was closed over a cap
	Open    func(delta int)     // a connection was admitted (+1) or closed (-1)
}

// Listener is a net.Listener whose Accept closes connections over the caps
// and returns only the others. It is safe for concurrent use.
type Listener struct {
	net.Listener
	limits Limits
	name   string
	hooks  Hooks
	log    *slog.Logger

	mu       sync.Mutex
	open     int
	bySource map[netip.Prefix]int
	lastLog  time.Time
	unlogged int
}

// logEvery is how often a listener logs that it refuses connections.
const logEvery = 10 * time.Second

// Wrap returns ln with limits; name names it in log lines.
func Wrap(ln net.Listener, name string, limits Limits, hooks Hooks, log *slog.Logger) *Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Listener{Listener: ln, limits: limits, name: name, hooks: hooks, log: log, bySource: map[netip.Prefix]int{}}
}

// Accept returns the next connection within the caps.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := source(c.RemoteAddr())
		if reason := l.admit(src); reason != "" {
			c.Close()
			l.refused(reason, src)
			continue
		}
		if l.hooks.Open != nil {
			l.hooks.Open(1)
		}
		return &conn{Conn: c, release: func() { l.release(src) }}, nil
	}
}

// Open returns how many connections are open.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

func (l *Listener) admit(src netip.Prefix) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.limits.Max > 0 && l.open >= l.limits.Max:
		return ReasonListener
	case l.limits.PerSource > 0 && src.IsValid() && l.bySource[src] >= l.limits.PerSource:
		return ReasonSource
	}
	l.open++
	if src.IsValid() {
		l.bySource[src]++
	}
	return ""
}

func (l *Listener) release(src netip.Prefix) {
	l.mu.Lock()
	l.open--
	if src.IsValid() {
		if l.bySource[src]--; l.bySource[src] <= 0 {
			delete(l.bySource, src)
		}
	}
	l.mu.Unlock()
	if l.hooks.Open != nil {
		l.hooks.Open(-1)
	}
}

// refused counts a refusal and logs it, once every logEvery: under a flood
// of connections one line says what happens.
func (l *Listener) refused(reason string, src netip.Prefix) {
	if l.hooks.Refused != nil {
		l.hooks.Refused(reason)
	}
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.lastLog) < logEvery {
		l.unlogged++
		l.mu.Unlock()
		return
	}
	n := l.unlogged
	l.lastLog, l.unlogged = now, 0
	l.mu.Unlock()
	most, what := l.limits.Max, "the listener holds its most connections"
	if reason == ReasonSource {
		most, what = l.limits.PerSource, "the source address holds its most connections"
	}
	l.log.Warn("connection refused: "+what, "listener", l.name, "source", src.String(), "cap", most, "refusedSinceLastLine", n)
}

// source is the address a connection counts against: the IPv4 address, or
// the /64 of an IPv6 address. Not an IP connection: invalid, counted only
// against the listener's cap.
func source(a net.Addr) netip.Prefix {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Prefix{}
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// conn gives its place back when closed, once.
type conn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
