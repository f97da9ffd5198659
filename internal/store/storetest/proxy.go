package storetest

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy for tests. It forwards each connection to one of its
// backends, round robin, and tries the next backend when one does not
// answer, as an L4 load balancer does. Cut takes the network away: it
// closes every connection and closes new ones as soon as they arrive, until
// Restore. Tests use it to take a database away from a store, or to put
// several dpsd nodes behind one address.
type Proxy struct {
	ln       net.Listener
	backends []string

	mu    sync.Mutex
	cut   bool
	next  int
	conns map[net.Conn]struct{}
}

// NewProxy listens on a free port of 127.0.0.1 and forwards to backends
// (host:port). It is closed when the test ends.
func NewProxy(t testing.TB, backends ...string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, backends: backends, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every connection and refuses new ones until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
}

// Restore forwards connections again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// Close stops the proxy and closes its connections.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Cut()
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

// track adds c to the open connections unless the network is cut.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

func (p *Proxy) pick() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	return p.next
}

func (p *Proxy) forward(c net.Conn) {
	defer c.Close()
	if !p.track(c) {
		return
	}
	defer p.untrack(c)
	first := p.pick()
	var b net.Conn
	for i := range p.backends {
		var err error
		b, err = net.DialTimeout("tcp", p.backends[(first+i)%len(p.backends)], 2*time.Second)
		if err == nil {
			break
		}
	}
	if b == nil {
		return
	}
	defer b.Close()
	if !p.track(b) {
		return
	}
	defer p.untrack(b)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		// Half-close would keep a dead peer's connection open; a proxy
		// that lost one side drops both, as a load balancer does.
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(b, c)
	go pipe(c, b)
	<-done
	<-done
}
