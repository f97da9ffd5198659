// Package cli implements the dpsd command line: the server (serve, info), the
// management commands shaped like `az iot dps` (enrollment, enrollment-group,
// certificate, linked-hub, registration, policy) and those of certificate
// issuance (issuing-ca, issued-certificate), the certificate helpers (cert)
// and the device client (device).
package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// Version is set at build time with -ldflags "-X github.com/dpsd/dpsd/internal/cli.Version=...".
var Version = "dev"

// Error is a failure with a hint telling the user what to do next.
type Error struct {
	Err  error
	Hint string
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// withHint attaches a hint to err.
func withHint(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return &Error{Err: err, Hint: fmt.Sprintf(format, args...)}
}

// env carries the process environment into commands, so tests can run them
// in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// Main runs the dpsd command line and returns the exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return run(args, &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: osGetenv})
}

func run(args []string, e *env) int {
	root := newRoot(e)
	root.SetArgs(args)
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	err := root.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintf(e.stderr, "dpsd: error: %s\n", strings.TrimSpace(err.Error()))
	var ce *Error
	if errors.As(err, &ce) && ce.Hint != "" {
		fmt.Fprintf(e.stderr, "dpsd: hint: %s\n", ce.Hint)
	} else if isUsageError(err) {
		fmt.Fprintf(e.stderr, "dpsd: hint: run 'dpsd %s --help' for usage\n", commandPath(root, args))
	}
	return 1
}

func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:           "dpsd",
		Short:         "Self-hosted device provisioning service, wire-compatible with Azure IoT Hub DPS",
		Version:       Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE:          func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(commands(e)...)
	return root
}

// commands lists every top-level command. Help prints them sorted by name.
func commands(e *env) []*cobra.Command {
	return []*cobra.Command{
		// The server and its data.
		newServeCmd(e),
		newInfoCmd(e),
		newMigrateCmd(e),
		newExportCmd(e),
		newImportCmd(e),

		// Management over the service API, in the shape of az iot dps.
		newInstanceShowCmd(e),
		newInstanceUpdateCmd(e),
		newEnrollmentCmd(e),
		newEnrollmentGroupCmd(e),
		newRegistrationCmd(e),
		newCertificateCmd(e),
		newLinkedHubCmd(e),
		newPolicyCmd(e),
		newIssuingCACmd(e),
		newIssuedCertificateCmd(e),

		// Helpers for devices: certificates, and a device client.
		newCertCmd(e),
		newDeviceCmd(e),
	}
}

type usageError struct{ error }

func isUsageError(err error) bool {
	var u usageError
	return errors.As(err, &u) || strings.HasPrefix(err.Error(), "unknown command") ||
		strings.Contains(err.Error(), "required flag") || strings.Contains(err.Error(), "accepts ")
}

func commandPath(root *cobra.Command, args []string) string {
	c, _, err := root.Find(args)
	if err != nil || c == root {
		return ""
	}
	return strings.TrimPrefix(c.CommandPath(), "dpsd ")
}
