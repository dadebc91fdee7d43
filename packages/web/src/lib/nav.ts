/**
 * The dashboard's pages, in sidebar order. A new page is a folder under src/routes/(app)/ plus
 * one entry here; `roles` hides an entry from members (the page itself still guards its API),
 * `admin` shows it only to platform admins (`User.is_admin`, what the /v1/hosts routes check).
 */
export interface NavEntry {
  href: string;
  label: string;
  /** An SVG path (24×24 viewBox, stroked). */
  icon: string;
  roles?: readonly ("owner" | "admin" | "member")[];
  admin?: boolean;
}

export const NAV: readonly NavEntry[] = [
  {
    href: "/",
    label: "Overview",
    icon: "M4 20V10M10 20V4M16 20v-7M22 20H2",
  },
  {
    href: "/sandboxes",
    label: "Sandboxes",
    icon: "M4 6h16M4 12h16M4 18h16",
  },
  {
    href: "/templates",
    label: "Templates",
    icon: "M4 4h7v7H4zM13 4h7v7h-7zM4 13h7v7H4zM13 13h7v7h-7z",
  },
  {
    href: "/keys",
    label: "API keys",
    icon: "M15 7a4 4 0 1 1-3.9 4.9L4 19v-3h3v-3h3l1.1-1.1A4 4 0 0 1 15 7z",
  },
  {
    href: "/team",
    label: "Team",
    icon: "M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM2 21v-1a6 6 0 0 1 12 0v1M16 3.5a4 4 0 0 1 0 7M22 21v-1a6 6 0 0 0-4-5.6",
  },
  {
    href: "/account",
    label: "Account",
    icon: "M12 12a5 5 0 1 0 0-10 5 5 0 0 0 0 10zM3 22a9 9 0 0 1 18 0",
  },
  {
    href: "/hosts",
    label: "Hosts",
    icon: "M3 4h18v6H3zM3 14h18v6H3zM7 7h.01M7 17h.01",
    admin: true,
  },
];

/** The entries this user sees, given their role in the current team and admin flag. */
export function visibleNav(role: string | undefined, isAdmin: boolean): NavEntry[] {
  return NAV.filter(
    (e) =>
      (!e.roles || (role !== undefined && (e.roles as readonly string[]).includes(role))) &&
      (!e.admin || isAdmin),
  );
}
