/// A config choice: a closed set of spellings, each naming one case (a case may have
/// aliases, as `reinforce` for `gpg`). The spellings are the one list of a choice's names:
/// the schema row of its key accepts exactly them, and its parser reads them.
public protocol ConfigChoice: Sendable, Equatable {
    /// Every accepted spelling with its case, in documentation order.
    static var spellings: [(name: String, value: Self)] { get }
}

extension ConfigChoice {
    /// The accepted spellings, in documentation order.
    public static var names: [String] { spellings.map(\.name) }

    /// The case's own name for a spelling (an alias maps to the first spelling of its
    /// case), so that a normalised document has one spelling per case. Unknown text is
    /// returned as it is, for validation to report.
    public static func canonical(_ name: String) -> String {
        guard let v = spellings.first(where: { $0.name == name })?.value else { return name }
        return spellings.first(where: { $0.value == v })?.name ?? name
    }

    /// The case spelled `name`, or a config error naming `key` and listing the spellings.
    /// A validated config never gets here with an unknown name.
    public static func parse(_ name: String, key: String) throws(AepoFailure) -> Self {
        guard let v = spellings.first(where: { $0.name == name })?.value else {
            throw .config(key, "unknown value \"\(name)\"; expected one of "
                + names.map { "\"\($0)\"" }.joined(separator: ", "))
        }
        return v
    }
}
