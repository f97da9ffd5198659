package tpm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// The TCP protocol of Microsoft's TPM 2.0 simulator (docs/protocol.md, "TPM
// attestation"): a
// command port carries TPM commands, the next port carries platform signals
// (power, NV). Every value is a big-endian uint32 unless noted.
const (
	simSignalPowerOn = 1
	simSignalNVOn    = 11
	simSendCommand   = 8
	simHandshake     = 15
	simSessionEnd    = 20

	simClientVersion = 1
	// simMaxResponse caps what is read from the simulator.
	simMaxResponse = 1 << 16
	simIOTimeout   = 30 * time.Second
)

// simConn is a TPM reached over the simulator protocol.
type simConn struct {
	mu   sync.Mutex
	cmd  net.Conn
	rd   *bufio.Reader
	plat net.Conn
}

// dialSimulator connects to a simulator's command port at addr and its
// platform port (the next one), powers the TPM on and starts it, as the
// Azure clients do (TPM2_Startup answering "already initialized" is fine).
func dialSimulator(addr string) (*simConn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p >= 65535 {
		return nil, fmt.Errorf("bad simulator port %q", port)
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	cmd, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("TPM simulator command port: %w", err)
	}
	c := &simConn{cmd: cmd, rd: bufio.NewReader(cmd)}
	if err := c.handshake(); err != nil {
		cmd.Close()
		return nil, err
	}
	platAddr := net.JoinHostPort(host, strconv.Itoa(p+1))
	c.plat, err = d.Dial("tcp", platAddr)
	if err != nil {
		cmd.Close()
		return nil, fmt.Errorf("TPM simulator platform port %s: %w", platAddr, err)
	}
	for _, sig := range []uint32{simSignalPowerOn, simSignalNVOn} {
		if err := c.signal(sig); err != nil {
			c.Close()
			return nil, err
		}
	}
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(c); err != nil && !errors.Is(err, tpm2.TPMRCInitialize) {
		c.Close()
		return nil, fmt.Errorf("TPM2_Startup: %w", err)
	}
	return c, nil
}

func (c *simConn) handshake() error {
	c.cmd.SetDeadline(time.Now().Add(simIOTimeout))
	defer c.cmd.SetDeadline(time.Time{})
	if _, err := c.cmd.Write(be32(simHandshake, simClientVersion)); err != nil {
		return fmt.Errorf("TPM simulator handshake: %w", err)
	}
	var resp [3]uint32 // server version, flags, acknowledgement
	if err := binary.Read(c.rd, binary.BigEndian, &resp); err != nil {
		return fmt.Errorf("TPM simulator handshake: %w (is it a Microsoft TPM simulator?)", err)
	}
	if resp[0] != simClientVersion || resp[2] != 0 {
		return fmt.Errorf("TPM simulator handshake: server version %d, acknowledgement %d", resp[0], resp[2])
	}
	return nil
}

func (c *simConn) signal(sig uint32) error {
	c.plat.SetDeadline(time.Now().Add(simIOTimeout))
	defer c.plat.SetDeadline(time.Time{})
	if _, err := c.plat.Write(be32(sig)); err != nil {
		return fmt.Errorf("TPM simulator platform signal %d: %w", sig, err)
	}
	var ack uint32
	if err := binary.Read(c.plat, binary.BigEndian, &ack); err != nil || ack != 0 {
		return fmt.Errorf("TPM simulator platform signal %d: acknowledgement %d, %v", sig, ack, err)
	}
	return nil
}

// Send implements transport.TPM.
func (c *simConn) Send(command []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cmd.SetDeadline(time.Now().Add(simIOTimeout))
	defer c.cmd.SetDeadline(time.Time{})
	msg := binary.BigEndian.AppendUint32(nil, simSendCommand)
	msg = append(msg, 0) // locality
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(command)))
	if _, err := c.cmd.Write(append(msg, command...)); err != nil {
		return nil, fmt.Errorf("TPM simulator: %w", err)
	}
	var n uint32
	if err := binary.Read(c.rd, binary.BigEndian, &n); err != nil {
		return nil, fmt.Errorf("TPM simulator: %w", err)
	}
	if n == 0 || n > simMaxResponse {
		return nil, fmt.Errorf("TPM simulator: response of %d bytes", n)
	}
	resp := make([]byte, n)
	if _, err := io.ReadFull(c.rd, resp); err != nil {
		return nil, fmt.Errorf("TPM simulator: %w", err)
	}
	var ack uint32
	if err := binary.Read(c.rd, binary.BigEndian, &ack); err != nil || ack != 0 {
		return nil, fmt.Errorf("TPM simulator: acknowledgement %d, %v", ack, err)
	}
	return resp, nil
}

// Close ends the session politely and closes both connections.
func (c *simConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cmd.SetWriteDeadline(time.Now().Add(time.Second))
	c.cmd.Write(be32(simSessionEnd))
	err := c.cmd.Close()
	if c.plat != nil {
		c.plat.SetWriteDeadline(time.Now().Add(time.Second))
		c.plat.Write(be32(simSessionEnd))
		err = errors.Join(err, c.plat.Close())
	}
	return err
}

func be32(vs ...uint32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	return b
}
