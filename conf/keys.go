package conf

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Kind is the TOML shape a key accepts.
type Kind uint8

const (
	// Bool is a TOML boolean, written as yes/no.
	Bool Kind = iota
	// String is a TOML string (or integer where KeyDef.Int allows it).
	String
	// BoolOrString takes either, for systemd keys such as PrivateUsers= that
	// accept a boolean or a mode.
	BoolOrString
	// List is an array of strings: later files append, an empty array resets.
	List
	// Table is a table of string values: later files merge key by key.
	Table
)

func (k Kind) String() string {
	switch k {
	case Bool:
		return "a boolean"
	case String:
		return "a string"
	case BoolOrString:
		return "a boolean or a string"
	case List:
		return "an array of strings"
	case Table:
		return "a table of strings"
	}
	return "?"
}

// KeyDef describes one key of a section: its shape and how to check a value.
type KeyDef struct {
	Name string
	Kind Kind
	// Int lets a String key also take a TOML integer (sizes, counts).
	Int bool
	// Specifiers marks unit-file keys whose values systemd expands %
	// specifiers in; their % must be doubled when written.
	Specifiers bool
	// Quote says how systemd splits the value into words, and so how each
	// element must be quoted to arrive intact.
	Quote Quoting
	// Check validates one scalar (or one list element, or one table value).
	Check func(string) error
	// Since is the first systemd release whose systemd-nspawn reads the
	// key; 0 for keys every supported release has. An older one would drop
	// the key with a warning, so berth refuses it up front.
	Since int
	// ValueSince is the same for single values of a key that older
	// releases refuse, such as PrivateUsers = "managed".
	ValueSince map[string]int
}

// Quoting is how systemd reads a key's value.
type Quoting uint8

const (
	// Verbatim values are read as one string with surrounding blanks
	// stripped, so such blanks cannot be expressed.
	Verbatim Quoting = iota
	// StrvWords values are split into words as config_parse_strv() does
	// (.nspawn Parameters=, Environment=): quotes group, backslash is literal.
	StrvWords
	// CWords values are split as unit-file Environment= is: quotes group and
	// C escapes such as \\ and \" are decoded.
	CWords
)

// Section is one TOML table of a machine file and the keys it accepts.
type Section struct {
	Name string
	Keys []KeyDef
}

// Key returns the definition of name, or nil.
func (s *Section) Key(name string) *KeyDef {
	for i := range s.Keys {
		if s.Keys[i].Name == name {
			return &s.Keys[i]
		}
	}
	return nil
}

func (s *Section) keyNames() []string {
	n := make([]string, len(s.Keys))
	for i, k := range s.Keys {
		n[i] = k.Name
	}
	return n
}

// Section names, in the order they are written.
const (
	SecMachine = "Machine"
	SecExec    = "Exec"
	SecFiles   = "Files"
	SecNetwork = "Network"
	SecUnit    = "Unit"
	SecService = "Service"

	SecTemplate = "Template"
)

// NspawnSections are the sections that map one to one onto systemd.nspawn(5).
var NspawnSections = []string{SecExec, SecFiles, SecNetwork}

// Schema is one kind of config file: where it is found and what it holds.
type Schema struct {
	Kind       string // "machine", "template": for messages
	Dir        string // KIND/NAME.toml and KIND/NAME.toml.d/ in each search dir
	AllDropIns string // drop-ins for every file of the kind
	Sections   []*Section
	index      map[string]keyRef // "Section\x00Key"
}

type keyRef struct {
	def   *KeyDef
	order int
}

func newSchema(kind, dir, all string, sections []*Section) *Schema {
	s := &Schema{Kind: kind, Dir: dir, AllDropIns: all, Sections: sections, index: map[string]keyRef{}}
	for si, sec := range sections {
		for ki := range sec.Keys {
			s.index[sec.Name+"\x00"+sec.Keys[ki].Name] = keyRef{&sec.Keys[ki], si<<8 | ki}
		}
	}
	return s
}

func (s *Schema) lookupKey(section, key string) (*KeyDef, int) {
	r := s.index[section+"\x00"+key]
	return r.def, r.order
}

// Section returns the schema of a section, or nil.
func (s *Schema) Section(name string) *Section {
	for _, sec := range s.Sections {
		if sec.Name == name {
			return sec
		}
	}
	return nil
}

func (s *Schema) sectionNames() []string {
	n := make([]string, len(s.Sections))
	for i, sec := range s.Sections {
		n[i] = sec.Name
	}
	return n
}

// Machines is the schema of machine files: machines/NAME.toml.
var Machines = newSchema("machine", "machines", "machines.d", machineSections)

// Templates is the schema of template recipes: templates/NAME.toml.
var Templates = newSchema("template", "templates", "templates.d", []*Section{
	{Name: SecTemplate, Keys: []KeyDef{
		{Name: "Suite", Kind: String},
		{Name: "Variant", Kind: String},
		{Name: "Include", Kind: List},
		{Name: "Architecture", Kind: String},
		{Name: "Components", Kind: List},
		{Name: "Mirror", Kind: String},
		{Name: "Bootstrapper", Kind: String, Check: oneOf("mmdebstrap", "debootstrap")},
	}},
})

// Settings is the schema of berth.toml, berth's own settings, found as
// berth.toml (and berth.toml.d/*.toml) in the search dirs.
var Settings = newSchema("settings", ".", "", []*Section{
	{Name: "Pool", Keys: []KeyDef{
		{Name: "Directory", Kind: String, Check: checkAbsPath},
	}},
	{Name: "Cache", Keys: []KeyDef{
		{Name: "Directory", Kind: String, Check: checkAbsPath},
	}},
})

// machineSections is the schema of a machine file. [Exec], [Files] and
// [Network] mirror systemd.nspawn(5) of systemd 262, with the keys and
// values 258 and later added marked by the release that has them; [Unit] and [Service]
// feed the systemd-nspawn@NAME.service drop-in; [Machine] holds berth's own
// keys.
var machineSections = []*Section{
	{Name: SecMachine, Keys: []KeyDef{
		{Name: "Enable", Kind: Bool},
		{Name: "Template", Kind: String, Check: checkMachineName},
	}},
	{Name: SecExec, Keys: []KeyDef{
		{Name: "Boot", Kind: Bool},
		{Name: "Ephemeral", Kind: Bool},
		{Name: "ProcessTwo", Kind: Bool},
		{Name: "Parameters", Kind: List, Quote: StrvWords},
		{Name: "Environment", Kind: Table, Quote: StrvWords},
		{Name: "User", Kind: String},
		{Name: "WorkingDirectory", Kind: String, Check: checkAbsPath},
		{Name: "PivotRoot", Kind: String},
		{Name: "Capability", Kind: List},
		{Name: "DropCapability", Kind: List},
		{Name: "AmbientCapability", Kind: List},
		{Name: "NoNewPrivileges", Kind: Bool},
		{Name: "KillSignal", Kind: String},
		{Name: "Personality", Kind: String, Check: oneOf("x86", "x86-64", "arm64", "arm64-be")},
		{Name: "MachineID", Kind: String, Check: checkID128},
		{Name: "PrivateUsers", Kind: BoolOrString, Check: checkPrivateUsers, ValueSince: map[string]int{"managed": 258}},
		{Name: "PrivateUsersDelegate", Kind: String, Int: true, Check: checkDelegate, Since: 260},
		{Name: "NotifyReady", Kind: Bool},
		{Name: "SystemCallFilter", Kind: List},
		{Name: "RestrictAddressFamilies", Kind: List, Check: checkAddressFamilies, Since: 261},
		{Name: "LimitCPU", Kind: String, Int: true},
		{Name: "LimitFSIZE", Kind: String, Int: true},
		{Name: "LimitDATA", Kind: String, Int: true},
		{Name: "LimitSTACK", Kind: String, Int: true},
		{Name: "LimitCORE", Kind: String, Int: true},
		{Name: "LimitRSS", Kind: String, Int: true},
		{Name: "LimitNOFILE", Kind: String, Int: true},
		{Name: "LimitAS", Kind: String, Int: true},
		{Name: "LimitNPROC", Kind: String, Int: true},
		{Name: "LimitMEMLOCK", Kind: String, Int: true},
		{Name: "LimitLOCKS", Kind: String, Int: true},
		{Name: "LimitSIGPENDING", Kind: String, Int: true},
		{Name: "LimitMSGQUEUE", Kind: String, Int: true},
		{Name: "LimitNICE", Kind: String, Int: true},
		{Name: "LimitRTPRIO", Kind: String, Int: true},
		{Name: "LimitRTTIME", Kind: String, Int: true},
		{Name: "OOMScoreAdjust", Kind: String, Int: true},
		{Name: "CPUAffinity", Kind: String},
		{Name: "Hostname", Kind: String, Check: checkHostname},
		{Name: "ResolvConf", Kind: String, Check: oneOf("off", "copy-host", "copy-static", "copy-uplink", "copy-stub",
			"replace-host", "replace-static", "replace-uplink", "replace-stub", "bind-host", "bind-static", "bind-uplink",
			"bind-stub", "delete", "auto")},
		{Name: "Timezone", Kind: String, Check: oneOf("off", "copy", "bind", "symlink", "delete", "auto")},
		{Name: "LinkJournal", Kind: String, Check: oneOf("no", "host", "try-host", "guest", "try-guest", "auto")},
		{Name: "SuppressSync", Kind: Bool},
	}},
	{Name: SecFiles, Keys: []KeyDef{
		{Name: "ReadOnly", Kind: Bool},
		{Name: "Volatile", Kind: BoolOrString, Check: oneOf("yes", "no", "state", "overlay")},
		{Name: "Bind", Kind: List},
		{Name: "BindReadOnly", Kind: List},
		{Name: "BindUser", Kind: List},
		{Name: "BindUserShell", Kind: BoolOrString, Check: checkBindUserShell, Since: 258},
		{Name: "TemporaryFileSystem", Kind: List},
		{Name: "Inaccessible", Kind: List},
		{Name: "Overlay", Kind: List},
		{Name: "OverlayReadOnly", Kind: List},
		{Name: "PrivateUsersOwnership", Kind: String, Check: oneOf("off", "chown", "map", "foreign", "auto"),
			ValueSince: map[string]int{"foreign": 258}},
	}},
	{Name: SecNetwork, Keys: []KeyDef{
		{Name: "Private", Kind: Bool},
		{Name: "VirtualEthernet", Kind: Bool},
		{Name: "VirtualEthernetExtra", Kind: List},
		{Name: "Interface", Kind: List},
		{Name: "MACVLAN", Kind: List},
		{Name: "IPVLAN", Kind: List},
		{Name: "Bridge", Kind: String},
		{Name: "Zone", Kind: String},
		{Name: "Port", Kind: List},
		{Name: "NamespacePath", Kind: String, Check: checkAbsPath, Since: 259},
	}},
	{Name: SecUnit, Keys: []KeyDef{
		{Name: "Description", Kind: String, Specifiers: true},
		{Name: "Documentation", Kind: List, Specifiers: true},
		{Name: "Wants", Kind: List, Specifiers: true, Check: checkUnitName},
		{Name: "Requires", Kind: List, Specifiers: true, Check: checkUnitName},
		{Name: "Requisite", Kind: List, Specifiers: true, Check: checkUnitName},
		{Name: "BindsTo", Kind: List, Specifiers: true, Check: checkUnitName},
		{Name: "PartOf", Kind: List, Specifiers: true, Check: checkUnitName},
		{Name: "Upholds", Kind: List, Specifiers: true, Check: checkUnitName},
		{Name: "Conflicts", Kind: List, Specifiers: true, Check: checkUnitName},
		{Name: "Before", Kind: List, Specifiers: true, Check: checkUnitName},
		{Name: "After", Kind: List, Specifiers: true, Check: checkUnitName},
		{Name: "OnFailure", Kind: List, Specifiers: true, Check: checkUnitName},
		{Name: "OnSuccess", Kind: List, Specifiers: true, Check: checkUnitName},
		{Name: "RequiresMountsFor", Kind: List, Specifiers: true, Check: checkAbsPath},
		{Name: "ConditionPathExists", Kind: List, Specifiers: true},
		{Name: "AssertPathExists", Kind: List, Specifiers: true},
	}},
	{Name: SecService, Keys: []KeyDef{
		{Name: "Restart", Kind: String, Check: oneOf("no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always")},
		{Name: "RestartSec", Kind: String, Int: true},
		{Name: "TimeoutStartSec", Kind: String, Int: true},
		{Name: "TimeoutStopSec", Kind: String, Int: true},
		{Name: "Slice", Kind: String, Specifiers: true, Check: checkSliceName},
		{Name: "MemoryMin", Kind: String, Int: true},
		{Name: "MemoryLow", Kind: String, Int: true},
		{Name: "MemoryHigh", Kind: String, Int: true},
		{Name: "MemoryMax", Kind: String, Int: true},
		{Name: "MemorySwapMax", Kind: String, Int: true},
		{Name: "CPUWeight", Kind: String, Int: true},
		{Name: "CPUQuota", Kind: String, Check: checkPercent},
		{Name: "AllowedCPUs", Kind: String},
		{Name: "AllowedMemoryNodes", Kind: String},
		{Name: "TasksMax", Kind: String, Int: true},
		{Name: "IOWeight", Kind: String, Int: true},
		{Name: "DeviceAllow", Kind: List, Specifiers: true},
		{Name: "Environment", Kind: Table, Specifiers: true, Quote: CWords},
	}},
}

func oneOf(allowed ...string) func(string) error {
	return func(v string) error {
		if slices.Contains(allowed, v) {
			return nil
		}
		return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
	}
}

func checkAbsPath(v string) error {
	if !path.IsAbs(v) {
		return fmt.Errorf("%q is not an absolute path", v)
	}
	return nil
}

// checkPrivateUsers takes what --private-users= does: a boolean, a mode,
// or a first UID with an optional count.
func checkPrivateUsers(v string) error {
	switch v {
	case "yes", "no", "pick", "identity", "managed":
		return nil
	}
	first, count, two := strings.Cut(v, ":")
	if isUint(first) && (!two || isUint(count)) {
		return nil
	}
	return fmt.Errorf("%q is not a boolean, \"pick\", \"identity\", \"managed\", \"UID\" or \"UID:COUNT\"", v)
}

// maxDelegate is the most 64K ranges systemd-nspawn delegates.
const maxDelegate = 16

func checkDelegate(v string) error {
	if n, err := strconv.Atoi(v); err != nil || n < 0 || n > maxDelegate || !isUint(v) {
		return fmt.Errorf("%q is not a number of ranges from 0 to %d", v, maxDelegate)
	}
	return nil
}

// checkAddressFamilies takes one list as RestrictAddressFamilies= does:
// "none", or address family names, all prefixed with ~ to deny them.
func checkAddressFamilies(v string) error {
	if v == "none" {
		return nil
	}
	names := strings.Fields(strings.TrimPrefix(v, "~"))
	if len(names) == 0 {
		return fmt.Errorf("%q names no address family (\"none\" denies them all)", v)
	}
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, "AF_")
		if !ok || rest == "" || strings.Trim(rest, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != "" {
			return fmt.Errorf("%q is not an address family name such as AF_INET", n)
		}
	}
	return nil
}

func checkBindUserShell(v string) error {
	if v == "yes" || v == "no" || path.IsAbs(v) {
		return nil
	}
	return fmt.Errorf("%q is neither a boolean nor an absolute path", v)
}

func isUint(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }

func checkMachineName(v string) error { return ValidateMachineName(v) }

func checkHostname(v string) error {
	if err := validateHostname(v); err != nil {
		return fmt.Errorf("%q is not a valid hostname: %w", v, err)
	}
	return nil
}

func checkID128(v string) error {
	s := strings.ReplaceAll(v, "-", "")
	if len(s) != 32 || strings.Trim(strings.ToLower(s), "0123456789abcdef") != "" {
		return fmt.Errorf("%q is not a 128-bit ID (32 hexadecimal digits)", v)
	}
	return nil
}

func checkPercent(v string) error {
	n := strings.TrimSuffix(v, "%")
	if n == v || n == "" || strings.Trim(n, "0123456789.") != "" {
		return fmt.Errorf("%q is not a percentage such as \"50%%\"", v)
	}
	return nil
}

// checkUnitName accepts what systemd takes as a dependency: a unit name with
// a known type suffix and only unit-name characters.
func checkUnitName(v string) error {
	dot := strings.LastIndexByte(v, '.')
	if dot <= 0 {
		return fmt.Errorf("%q is not a unit name (no type suffix such as .service)", v)
	}
	switch v[dot+1:] {
	case "service", "socket", "device", "mount", "automount", "swap", "target", "path", "timer", "slice", "scope":
	default:
		return fmt.Errorf("%q is not a unit name (unknown type %q)", v, v[dot+1:])
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(":-_.\\@%", r)) {
			return fmt.Errorf("%q is not a unit name (bad character %q)", v, r)
		}
	}
	if len(v) > 255 {
		return fmt.Errorf("unit name %q is longer than 255 characters", v)
	}
	return nil
}

func checkSliceName(v string) error {
	if err := checkUnitName(v); err != nil {
		return err
	}
	if !strings.HasSuffix(v, ".slice") {
		return fmt.Errorf("%q is not a slice unit", v)
	}
	return nil
}
