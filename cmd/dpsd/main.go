// Command dpsd is a self-hosted device provisioning service that speaks the
// Azure IoT Hub DPS wire protocol. See README.md.
package main

import (
	"os"

	"github.com/dpsd/dpsd/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }
