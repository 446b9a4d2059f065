// Command berthd is berth's socket-activated varlink service. Its
// interfaces arrive with the template and machine work (issues 3 and 4);
// until then it refuses to start so nothing mistakes it for a service.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "berthd: no varlink interfaces are implemented in this version")
	os.Exit(1)
}
