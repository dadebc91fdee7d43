/**
 * The dashboard's pages, in sidebar order. A new page is a folder under src/routes/(app)/ plus
 * one entry here; `roles` hides an entry from some team roles (the page itself still guards its
 * API), `admin` shows it only to platform admins (`User.is_admin`), `byoc` only while the
 * current team is a BYOC team (`Team.is_byoc`: it brings its own hosts).
 */
export interface NavEntry {
  href: string;
  label: string;
  /** An SVG path (24×24 viewBox, stroked). */
  icon: string;
  roles?: readonly ("owner" | "admin" | "member")[];
  admin?: boolean;
  byoc?: boolean;
}

const HOSTS_ICON = "M3 4h18v6H3zM3 14h18v6H3zM7 7h.01M7 17h.01";
const SANDBOXES_ICON = "M4 6h16M4 12h16M4 18h16";
const TEMPLATES_ICON = "M4 4h7v7H4zM13 4h7v7h-7zM4 13h7v7H4zM13 13h7v7h-7z";

export const NAV: readonly NavEntry[] = [
  {
    href: "/",
    label: "Overview",
    icon: "M4 20V10M10 20V4M16 20v-7M22 20H2",
  },
  { href: "/sandboxes", label: "Sandboxes", icon: SANDBOXES_ICON },
  { href: "/templates", label: "Templates", icon: TEMPLATES_ICON },
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
  { href: "/hosts", label: "Hosts", icon: HOSTS_ICON, byoc: true },
  {
    href: "/account",
    label: "Account",
    icon: "M12 12a5 5 0 1 0 0-10 5 5 0 0 0 0 10zM3 22a9 9 0 0 1 18 0",
  },
  {
    href: "/admin",
    label: "Platform admin",
    icon: "M12 2l8 3v6c0 5-3.5 9.5-8 11-4.5-1.5-8-6-8-11V5z",
    admin: true,
  },
];

/** The admin section's own sidebar (`/admin/...`, platform admins only). */
export const ADMIN_NAV: readonly NavEntry[] = [
  { href: "/admin/hosts", label: "Hosts", icon: HOSTS_ICON },
  {
    href: "/admin/users",
    label: "Users",
    icon: "M12 12a5 5 0 1 0 0-10 5 5 0 0 0 0 10zM3 22a9 9 0 0 1 18 0",
  },
  {
    href: "/admin/teams",
    label: "Teams",
    icon: "M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM2 21v-1a6 6 0 0 1 12 0v1M16 3.5a4 4 0 0 1 0 7M22 21v-1a6 6 0 0 0-4-5.6",
  },
  { href: "/admin/templates", label: "Templates", icon: TEMPLATES_ICON },
  { href: "/admin/sandboxes", label: "Sandboxes", icon: SANDBOXES_ICON },
];

/** Who is looking: their role in the current team, the admin flag, the team's BYOC flag. */
export interface Viewer {
  role: string | undefined;
  isAdmin: boolean;
  isByoc: boolean;
}

/** The entries this viewer sees. */
export function visibleNav(v: Viewer): NavEntry[] {
  return NAV.filter(
    (e) =>
      (!e.roles || (v.role !== undefined && (e.roles as readonly string[]).includes(v.role))) &&
      (!e.admin || v.isAdmin) &&
      (!e.byoc || v.isByoc),
  );
}
