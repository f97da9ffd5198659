// Command tpm-simulator runs Microsoft's reference TPM 2.0 on the TPM
// simulator's TCP protocol for clients that need a TPM: the Azure Node TPM
// client (tss.js `new Tpm(true)` dials 127.0.0.1:2321 and 2322) and
// `dpsd device register --tpm 127.0.0.1:2321`. It is a test tool (cgo), not
// part of dpsd:
//
//	go run ./internal/tpmsim/cmd/tpm-simulator [-addr 127.0.0.1:2321] [-provision]
//
// It prints {"addr": ..., "endorsementKey": ..., "registrationId": ...} as
// one JSON line once it listens (the EK fields with -provision, which
// creates the EK and SRK at the Azure clients' handles first), then serves
// until interrupted. The TPM's state lives in memory and dies with it.
package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/dpsd/dpsd/internal/tpm"
	"github.com/dpsd/dpsd/internal/tpmsim"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:2321", "command port host:port (the platform port is the next one); port 0 picks a free pair")
	provision := flag.Bool("provision", false, "create the EK and SRK before serving")
	flag.Parse()
	if err := run(*addr, *provision); err != nil {
		fmt.Fprintln(os.Stderr, "tpm-simulator:", err)
		os.Exit(1)
	}
}

func run(addr string, provision bool) error {
	sim, err := tpmsim.Start()
	if err != nil {
		return err
	}
	defer sim.Close()
	info := map[string]string{}
	if provision {
		ek, _, err := sim.Provision()
		if err != nil {
			return err
		}
		info["endorsementKey"] = base64.StdEncoding.EncodeToString(ek)
		info["registrationId"] = tpm.RegistrationID(ek)
	}
	srv, err := sim.Listen(addr)
	if err != nil {
		return err
	}
	defer srv.Close()
	info["addr"] = srv.Addr()
	if err := json.NewEncoder(os.Stdout).Encode(info); err != nil {
		return err
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
	return nil
}
