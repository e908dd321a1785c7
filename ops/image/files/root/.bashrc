# ~/.bashrc: read by interactive non-login bash (and by login bash through
# ~/.profile). All the set-up lives in /etc/profile.d/sandpit.sh so that
# "bash -l" and "bash -i" get the same prompt and completion.

# Non-interactive shells (scripts, "bash -c") need none of this.
case $- in
*i*) ;;
*) return ;;
esac

HISTCONTROL=ignoreboth
HISTSIZE=5000
shopt -s histappend checkwinsize

if [ -r /etc/profile.d/sandpit.sh ]; then
    # shellcheck source=/dev/null
    . /etc/profile.d/sandpit.sh
fi
