# fish completion for berth(1): the candidates come from "berth __complete",
# which knows this binary's verbs and options and asks berthd (read-only,
# quietly) for machine, template and snapshot names.

function __berth_complete
    set -l words (commandline -opc) (commandline -ct)
    set -l cands (command $words[1] __complete $words[2..-1] 2>/dev/null)
    switch "$cands[1]"
        case :file
            __fish_complete_path (commandline -ct)
        case :dir
            __fish_complete_directories (commandline -ct)
        case '*'
            printf '%s\n' $cands
    end
end

complete -c berth -f -a '(__berth_complete)'
