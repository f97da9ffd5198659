package tpmsim

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
)

// The Microsoft TPM simulator's TCP protocol (TcpServer.c of the reference
// implementation), the subset its clients use. Integers are big-endian
// uint32. Command port: SEND_COMMAND (locality byte, size, command →
// size, response, 0), REMOTE_HANDSHAKE (client version → server version,
// flags, 0), SESSION_END and STOP (close). Platform port: each signal is
// answered 0.
const (
	tcpSendCommand  = 8
	tcpHandshake    = 15
	tcpSessionEnd   = 20
	tcpStop         = 21
	platPowerOn     = 1
	platPowerOff    = 2
	platPPOn        = 3
	platPPOff       = 4
	platCancelOn    = 9
	platCancelOff   = 10
	platNVOn        = 11
	platNVOff       = 12
	platKeyCacheOn  = 13
	platKeyCacheOff = 14
	platReset       = 17

	serverVersion     = 1
	platformAvailable = 1
	// maxCommand caps a command; the reference TPM's buffers are 4 KiB.
	maxCommand = 1 << 16
)

// Server serves a Simulator on the simulator TCP protocol: commands on one
// port, platform signals on the next.
type Server struct {
	sim           *Simulator
	cmdLn, platLn net.Listener
	wg            sync.WaitGroup
	mu            sync.Mutex
	conns         map[net.Conn]struct{}
	closed        bool
}

// Listen serves s on addr (host:port, the command port) and the next port
// (the platform port). With port 0 it picks a free pair of consecutive
// ports; Addr tells which.
func (s *Simulator) Listen(addr string) (*Server, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p >= 65535 {
		return nil, fmt.Errorf("bad port %q", port)
	}
	srv := &Server{sim: s, conns: map[net.Conn]struct{}{}}
	for try := 0; ; try++ {
		srv.cmdLn, err = net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			return nil, err
		}
		cp := srv.cmdLn.Addr().(*net.TCPAddr).Port
		if cp < 65535 {
			srv.platLn, err = net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(cp+1)))
			if err == nil {
				break
			}
		}
		srv.cmdLn.Close()
		if p != 0 || try == 50 {
			return nil, fmt.Errorf("platform port %d: %w", cp+1, err)
		}
	}
	srv.wg.Add(2)
	go srv.accept(srv.cmdLn, srv.serveCommands)
	go srv.accept(srv.platLn, srv.servePlatform)
	return srv, nil
}

// Addr is the command port's address (host:port); the platform port is the
// next one.
func (srv *Server) Addr() string { return srv.cmdLn.Addr().String() }

// Close stops listening, closes the open connections and waits for them.
// The simulator keeps running.
func (srv *Server) Close() error {
	srv.mu.Lock()
	srv.closed = true
	for c := range srv.conns {
		c.Close()
	}
	srv.mu.Unlock()
	err := errors.Join(srv.cmdLn.Close(), srv.platLn.Close())
	srv.wg.Wait()
	return err
}

func (srv *Server) accept(ln net.Listener, serve func(io.ReadWriter) error) {
	defer srv.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		srv.mu.Lock()
		if srv.closed {
			srv.mu.Unlock()
			c.Close()
			return
		}
		srv.conns[c] = struct{}{}
		srv.wg.Add(1)
		srv.mu.Unlock()
		go func() {
			defer srv.wg.Done()
			serve(struct {
				io.Reader
				io.Writer
			}{bufio.NewReader(c), c})
			c.Close()
			srv.mu.Lock()
			delete(srv.conns, c)
			srv.mu.Unlock()
		}()
	}
}

// serveCommands runs the command port's loop until the client ends the
// session, breaks the protocol or goes away.
func (srv *Server) serveCommands(c io.ReadWriter) error {
	for {
		op, err := readU32(c)
		if err != nil {
			return err
		}
		switch op {
		case tcpHandshake:
			if _, err := readU32(c); err != nil { // client version
				return err
			}
			if err := writeU32(c, serverVersion, platformAvailable, 0); err != nil {
				return err
			}
		case tcpSendCommand:
			var locality [1]byte
			if _, err := io.ReadFull(c, locality[:]); err != nil {
				return err
			}
			n, err := readU32(c)
			if err != nil {
				return err
			}
			if n > maxCommand {
				return fmt.Errorf("command of %d bytes", n)
			}
			cmd := make([]byte, n)
			if _, err := io.ReadFull(c, cmd); err != nil {
				return err
			}
			resp, err := srv.sim.Send(cmd)
			if err != nil {
				return err
			}
			out := binary.BigEndian.AppendUint32(nil, uint32(len(resp)))
			out = binary.BigEndian.AppendUint32(append(out, resp...), 0)
			if _, err := c.Write(out); err != nil {
				return err
			}
		case tcpSessionEnd, tcpStop:
			return nil
		default:
			return fmt.Errorf("unsupported simulator command %d", op)
		}
	}
}

// servePlatform acknowledges platform signals. The TPM is on and started
// from Start to Close, so power and NV signals change nothing (a real
// simulator also ignores POWER_ON when already on); RESET reboots it.
func (srv *Server) servePlatform(c io.ReadWriter) error {
	for {
		sig, err := readU32(c)
		if err != nil {
			return err
		}
		switch sig {
		case platPowerOn, platPowerOff, platPPOn, platPPOff, platCancelOn, platCancelOff, platNVOn, platNVOff, platKeyCacheOn, platKeyCacheOff:
		case platReset:
			if err := srv.sim.reset(); err != nil {
				return err
			}
		case tcpSessionEnd, tcpStop:
			return nil
		default:
			return fmt.Errorf("unsupported platform signal %d", sig)
		}
		if err := writeU32(c, 0); err != nil {
			return err
		}
	}
}

func (s *Simulator) reset() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sim.Reset()
}

func readU32(r io.Reader) (uint32, error) {
	var b [4]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b[:]), nil
}

func writeU32(w io.Writer, vs ...uint32) error {
	var b []byte
	for _, v := range vs {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	_, err := w.Write(b)
	return err
}
