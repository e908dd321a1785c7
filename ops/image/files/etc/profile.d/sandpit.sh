# sandpit shell set-up. /etc/profile sources this for login shells (also
# dash's "sh -l", so keep it POSIX sh); /root/.bashrc sources it for
# interactive non-login bash, so "bash -l" and "bash -i" look the same.

# C.UTF-8 is built into Debian 12's libc: no locales package needed.
LANG=C.UTF-8
export LANG

# The rest is for interactive bash only; sourcing twice (login shell:
# /etc/profile, then ~/.profile -> ~/.bashrc) is cheap because of the guard.
# The guard is not exported, so a nested "bash" sets itself up again.
# shellcheck disable=SC3044 # shopt only runs in bash (checked just below)
if [ -n "${BASH_VERSION:-}" ] && [ -z "${_sandpit_shell_done:-}" ]; then
    case $- in
    *i*)
        _sandpit_shell_done=1

        # [user@host dir]# with colour: user red for root, green otherwise.
        if [ "$(id -u)" -eq 0 ]; then _sandpit_ucol='1;31'; else _sandpit_ucol='1;32'; fi
        PS1='[\[\e['"$_sandpit_ucol"'m\]\u\[\e[0m\]@\[\e[1;36m\]\h\[\e[0m\] \[\e[1;34m\]\W\[\e[0m\]]\$ '
        unset _sandpit_ucol

        # Tab completion (docker, git, ...). Debian's /etc/bash.bashrc has
        # this block commented out, so nobody else loads it.
        if ! shopt -oq posix && [ -r /usr/share/bash-completion/bash_completion ]; then
            # shellcheck source=/dev/null
            . /usr/share/bash-completion/bash_completion
        fi

        alias ls='ls --color=auto'
        alias grep='grep --color=auto'

        # The node has no PAM, so nothing else prints /etc/motd: show it once
        # per interactive login shell.
        if shopt -q login_shell && [ -r /etc/motd ]; then
            cat /etc/motd
        fi
        ;;
    esac
fi
