# bash completion for berth(1).
#
# The candidates come from "berth __complete WORD...", which knows the
# verbs and options of this very binary and asks berthd (read-only, within
# two seconds, quietly) for the names of machines, templates and snapshots.

_berth() {
	local cur words cword
	if declare -F _get_comp_words_by_ref >/dev/null; then
		# bash-completion's helper keeps --opt=value and docker://x whole.
		_get_comp_words_by_ref -n =: cur words cword
	else
		words=("${COMP_WORDS[@]}") cword=$COMP_CWORD cur=${COMP_WORDS[COMP_CWORD]}
	fi
	local IFS=$'\n'
	local -a cands
	cands=($("${words[0]}" __complete "${words[@]:1:cword}" 2>/dev/null))
	# For --opt=value bash replaces only what follows the "=".
	local opt=
	[[ $cur == -*=* ]] && opt=${cur%%=*}= cur=${cur#*=}
	case ${cands[0]-} in
	:file)
		compopt -o filenames 2>/dev/null
		COMPREPLY=($(compgen -f -- "$cur"))
		;;
	:dir)
		compopt -o filenames 2>/dev/null
		COMPREPLY=($(compgen -d -- "$cur"))
		;;
	*)
		COMPREPLY=("${cands[@]#"$opt"}")
		;;
	esac
}
complete -F _berth berth
