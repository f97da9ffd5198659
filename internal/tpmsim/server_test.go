package tpmsim_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/tpmsim"
)

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

func u32s(vs ...uint32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	return b
}

func readU32s(t *testing.T, r io.Reader, n int) []uint32 {
	t.Helper()
	b := make([]byte, 4*n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatal(err)
	}
	out := make([]uint32, n)
	for i := range out {
		out[i] = binary.BigEndian.Uint32(b[4*i:])
	}
	return out
}

// TestProtocol speaks the simulator protocol byte by byte, as tss.js does.
func TestProtocol(t *testing.T) {
	sim := tpmsim.Open(t)
	addr := tpmsim.Serve(t, sim)
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)

	cmd := dial(t, addr)
	cmd.Write(u32s(15, 1)) // REMOTE_HANDSHAKE, client version 1
	if got := readU32s(t, cmd, 3); got[0] != 1 || got[2] != 0 {
		t.Errorf("handshake answer %v, want server version 1 and acknowledgement 0", got)
	}
	plat := dial(t, net.JoinHostPort(host, strconv.Itoa(p+1)))
	for _, sig := range []uint32{1, 11} { // POWER_ON, NV_ON
		plat.Write(u32s(sig))
		if got := readU32s(t, plat, 1); got[0] != 0 {
			t.Errorf("signal %d acknowledged with %d", sig, got[0])
		}
	}
	// TPM2_GetRandom(8): tag, size, command code, bytesRequested.
	getRandom := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8}
	msg := append(u32s(8), 0) // SEND_COMMAND, locality 0
	cmd.Write(append(append(msg, u32s(uint32(len(getRandom)))...), getRandom...))
	n := readU32s(t, cmd, 1)[0]
	resp := make([]byte, n)
	io.ReadFull(cmd, resp)
	if n != 20 || binary.BigEndian.Uint32(resp[6:]) != 0 || binary.BigEndian.Uint16(resp[10:]) != 8 {
		t.Errorf("GetRandom response %x", resp)
	}
	if ack := readU32s(t, cmd, 1)[0]; ack != 0 {
		t.Errorf("acknowledgement %d", ack)
	}
	cmd.Write(u32s(20)) // SESSION_END
	if _, err := cmd.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("after SESSION_END: %v, want the connection closed", err)
	}
}

func TestProtocolRefusals(t *testing.T) {
	sim := tpmsim.Open(t)
	addr := tpmsim.Serve(t, sim)
	for name, msg := range map[string][]byte{
		"unknown command":     u32s(99),
		"oversized command":   append(append(u32s(8), 0), u32s(1<<20)...),
		"short TPM command":   append(append(append(u32s(8), 0), u32s(2)...), 0x80, 0x01),
		"truncated handshake": u32s(15)[:3],
	} {
		t.Run(name, func(t *testing.T) {
			c := dial(t, addr)
			c.Write(msg)
			if name == "truncated handshake" {
				c.(*net.TCPConn).CloseWrite()
			}
			if n, err := c.Read(make([]byte, 16)); !errors.Is(err, io.EOF) {
				t.Errorf("read %d bytes, %v; want the connection closed", n, err)
			}
		})
	}
	// The TPM still serves a well-behaved client.
	c := dial(t, addr)
	c.Write(u32s(15, 1))
	if got := readU32s(t, c, 3); got[0] != 1 {
		t.Errorf("handshake after refusals: %v", got)
	}
}
