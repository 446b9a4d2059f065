package image

// SnapshotNested lets the tests replay what a running machine can do
// between the listing of its nested subvolumes and their snapshots.
var SnapshotNested = snapshotNested
