import Glibc
import IPC

/// `--auth-program-user`: the user the auth helper's policy program runs as when peerjs can
/// change users (issue 16). It exists so that a compromised program — it parses client-chosen
/// ids and tokens — cannot read what the helper's user must read (the users file: every token;
/// the JWT key: with HS256, the means to mint tokens). It must therefore be a user of its own:
/// not root, and neither the helper's user (then it could read them) nor the broker's (then it
/// could signal the broker, and the broker it). Checked by the supervisor at start-up and again by
/// the helper before it starts the program.
enum PolicyProgramUser {
    static let defaultName = "_peerjs-policy"

    /// The program's user, checked against the helper's (`--auth-user`) and, when known, the
    /// broker's (`--user`) user: both by name and by uid.
    static func lookUp(_ name: String, helperUser: String, brokerUser: String?) throws(PolicyProgramUserError) -> RoleSpawner.ProgramUser {
        errno = 0
        guard let entry = getpwnam(name) else {
            let reason = errno == 0 ? "no such user" : String(cString: strerror(errno))
            throw PolicyProgramUserError(
                "--auth-program-user \(name) does not exist (\(reason)): the policy program runs as a user of its own when peerjs can change users; create it (`useradd --system --user-group --no-create-home --shell /usr/sbin/nologin \(name)`, or scripts/setup.sh, which creates \(defaultName)) or pass another unprivileged user with --auth-program-user")
        }
        let user = RoleSpawner.ProgramUser(name: name, uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid)
        guard user.uid != 0, user.gid != 0 else {
            throw PolicyProgramUserError("--auth-program-user \(name) is root (uid \(user.uid), gid \(user.gid)); name an unprivileged user of its own for the policy program")
        }
        for (flag, other, whose) in [("--auth-user", helperUser, "auth helper"), ("--user", brokerUser, "broker")] {
            guard let other else { continue }
            let otherIDs = getpwnam(other).map { ($0.pointee.pw_uid, $0.pointee.pw_gid) }
            guard other != name, otherIDs?.0 != user.uid else {
                throw PolicyProgramUserError(
                    "--auth-program-user \(name) is the \(whose)'s user (\(flag) \(other), uid \(user.uid)): the policy program must run as a user of its own, or it could \(whose == "broker" ? "signal the broker" : "read the users file and the JWT key"); pass another --auth-program-user (default \(defaultName))")
            }
            // Its group alone (a users file is typically root:<helper's group>, mode 0640).
            guard otherIDs?.1 != user.gid else {
                throw PolicyProgramUserError(
                    "--auth-program-user \(name) has the \(whose)'s primary group (gid \(user.gid), that of \(flag) \(other)): the policy program must not share it, or it could read what that group may; give \(name) a group of its own or pass another --auth-program-user")
            }
        }
        return user
    }
}

/// Why the policy program's user cannot be used; the message names the flag and the fix.
struct PolicyProgramUserError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
