// Package crashpoint names the points of an operation where the crash tests
// stop the agent with SIGKILL: before a seal allocates, after it copied,
// around its vram.sealed event, around a release's free, around a lease's
// hand-off, and inside a spool rotation.
//
// In the release build Hit is an empty function the compiler inlines away:
// no name, no environment variable and no code of this package reaches the
// binary (cmd/agent's TestReleaseBuildHasNoCrashPoints checks it). Built
// with the crashpoints tag, Hit(name) stops the process at the point named
// by VRAMSEAL_CRASHPOINT: it writes the name and a newline to the FIFO named
// by VRAMSEAL_CRASHPOINT_FIFO and then blocks forever, so the test kills the
// process exactly there.
package crashpoint
