// Command registry-webhook is a minimal receiver of dpsd's registry webhook
// (docs/registry-webhook.md): it checks each delivery's signature and prints
// the event. Replace apply with the calls your broker or registry needs.
//
//	DPSD_WEBHOOK_SECRET='a long random secret' go run ./examples/registry-webhook -listen 127.0.0.1:8080
//
// and give dpsd the URL http://127.0.0.1:8080/dpsd and the same secret.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
)

// event holds the fields this receiver uses; see the docs for all of them.
type event struct {
	Type           string `json:"eventType"`
	ID             string `json:"eventId"`
	Hub            string `json:"hub"`
	RegistrationID string `json:"registrationId"`
	DeviceID       string `json:"deviceId"`
	Authentication *struct {
		Type string `json:"type"`
	} `json:"authentication"`
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	flag.Parse()
	secret := os.Getenv("DPSD_WEBHOOK_SECRET")
	if secret == "" {
		log.Fatal("set DPSD_WEBHOOK_SECRET to the secret given to dpsd")
	}
	http.Handle("POST /dpsd", handler([]byte(secret), apply))
	log.Fatal(http.ListenAndServe(*listen, nil))
}

// apply is where a real receiver creates or deletes the device in its
// broker. An error makes dpsd retry the delivery, then fail the device's
// registration. Never log the keys in ev.
func apply(ev event) error {
	auth := ""
	if ev.Authentication != nil {
		auth = ev.Authentication.Type
	}
	log.Printf("%s: device %q (registration %q) on hub %s, authentication %s", ev.Type, ev.DeviceID, ev.RegistrationID, ev.Hub, auth)
	return nil
}

func handler(secret []byte, apply func(event) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if !validSignature(secret, body, r.Header.Get("X-Dpsd-Signature-256")) {
			http.Error(w, "signature does not verify", http.StatusUnauthorized)
			return
		}
		var ev event
		if err := json.Unmarshal(body, &ev); err != nil {
			http.Error(w, "not an event", http.StatusBadRequest)
			return
		}
		if err := apply(ev); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// validSignature checks "sha256=<hex HMAC-SHA256 of the body>" in constant
// time.
func validSignature(secret, body []byte, header string) bool {
	sig, ok := strings.CutPrefix(header, "sha256=")
	got, err := hex.DecodeString(sig)
	if !ok || err != nil {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}
