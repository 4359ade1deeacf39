// rackflow's pages in Airflow's UI. Airflow loads this bundle once per react_apps entry (each with its
// own `?page=` URL), renders the default export inside its router under `plugin/<url_route>/*`, and
// passes the DAG/run/task ids on DAG-run tabs. The entry picks the page by its url_route.
import { Box } from "@chakra-ui/react";
import { Component, type ReactNode } from "react";
import { useParams } from "react-router-dom";

import { PAGES, type PageProps } from "./pages";
import { ErrorAlert } from "./shared/ui";

class Boundary extends Component<{ children: ReactNode }, { error: unknown }> {
  state = { error: null as unknown };

  static getDerivedStateFromError(error: unknown) {
    return { error };
  }

  render() {
    return this.state.error ? <ErrorAlert error={this.state.error} what="this page" /> : this.props.children;
  }
}

export default function RackflowPage(props: PageProps) {
  const { page } = useParams();
  const Page = PAGES[page ?? ""];
  return (
    <Box p={4} data-rackflow-page={page}>
      <Boundary>{Page ? <Page {...props} /> : <ErrorAlert error={new Error(`no rackflow page ${page}`)} />}</Boundary>
    </Box>
  );
}
