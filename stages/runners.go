package stages

import (
	"fmt"
	"slices"
	"strings"
)

// Runners are the Beam runners igpt links in (stages/beam.go imports
// them). A runner Beam does not know fails only when a Beam stage starts,
// after the source is read, from inside Beam; CheckRunner refuses it when
// the config is loaded or the flag read, before anything runs.
var Runners = []string{"prism", "direct", "dataflow"}

// CheckRunner reports a runner name igpt cannot run, naming where it came
// from (the config key runner or the --runner flag) and the runners there
// are, with the nearest one.
func CheckRunner(where, name string) error {
	if slices.Contains(Runners, name) {
		return nil
	}
	return fmt.Errorf("%s: runner %q is not one igpt runs (%s)%s", where, name, strings.Join(Runners, ", "), didYouMean(name, Runners))
}
