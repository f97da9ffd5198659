package cli

import (
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets testscript run dpsd in-process as the "dpsd" command.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"dpsd": func() { os.Exit(Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs testdata/script/*.txtar. Each script starts in a fresh
// work directory; setups registered in scriptSetups run first (a running
// server, for the management commands).
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(e *testscript.Env) error {
			for _, s := range scriptSetups {
				if err := s(e); err != nil {
					return err
				}
			}
			return nil
		},
		Cmds:                scriptCmds,
		RequireExplicitExec: true,
	})
}

// scriptSetups and scriptCmds are extended by other _test.go files of this
// package in init functions.
var (
	scriptSetups []func(*testscript.Env) error
	scriptCmds   = map[string]func(ts *testscript.TestScript, neg bool, args []string){}
)
