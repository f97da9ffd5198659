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

// TestScripts runs testdata/script/*.txtar, each in a fresh work directory.
//
// Script commands besides testscript's own:
//
//	start-server          run a dpsd server in-process on 127.0.0.1:0 with data in
//	                      $WORK/dpsd-data; sets DPSD_DATA (so dpsd commands need no
//	                      flags), DPSD_SERVICE (host:port) and SERVER_CA; stops at
//	                      the end of the script
//	grab VAR REGEXP       set $VAR to the first submatch of REGEXP in the last stdout
//	json-count N          the last stdout is a JSON array of N items (or an object
//	                      whose "value" array has N items)
//	certmode FILE MODE    FILE's permission bits equal the octal MODE
//	flush-journal         the server writes the refusals it recorded so far
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:   "testdata/script",
		Setup: noRaceExitSleep,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"start-server":  cmdStartServer,
			"grab":          cmdGrab,
			"json-count":    cmdJSONCount,
			"certmode":      certModeCmd,
			"flush-journal": cmdFlushJournal,
		},
		RequireExplicitExec: true,
	})
}
