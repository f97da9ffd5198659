package mqtt

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// wsTransport is the MQTT byte stream of a WebSocket: binary messages carry
// it, and a packet may span messages or share one with others (MQTT over
// WebSocket, MQTT 3.1.1 §6).
type wsTransport struct {
	ws        *websocket.Conn
	r         io.Reader // the current message
	closeOnce sync.Once
}

// WebSocketStream is the MQTT byte stream of a WebSocket connection, as the
// server reads and writes it; test devices use it too.
func WebSocketStream(ws *websocket.Conn) io.ReadWriteCloser { return &wsTransport{ws: ws} }

var errTextMessage = errors.New("a text WebSocket message: MQTT travels in binary messages")

func (w *wsTransport) Read(p []byte) (int, error) {
	for {
		if w.r == nil {
			typ, r, err := w.ws.NextReader()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errTextMessage
			}
			w.r = r
		}
		n, err := w.r.Read(p)
		if err == io.EOF {
			w.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

// Write sends p as one binary message (the connection writes one packet per
// call).
func (w *wsTransport) Write(p []byte) (int, error) {
	if err := w.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *wsTransport) SetReadDeadline(t time.Time) error  { return w.ws.SetReadDeadline(t) }
func (w *wsTransport) SetWriteDeadline(t time.Time) error { return w.ws.SetWriteDeadline(t) }
func (w *wsTransport) RemoteAddr() net.Addr               { return w.ws.RemoteAddr() }

// Close sends a close frame (best effort, briefly) and closes the connection.
func (w *wsTransport) Close() error {
	var err error
	w.closeOnce.Do(func() {
		_ = w.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		err = w.ws.Close()
	})
	return err
}
